//! chitchat's transport over the mesh's streams instead of UDP: an
//! envelope goes as one membership frame to the peer's advertised address,
//! and arrives tagged with the sender's advertised address (from its
//! authenticated hello), which is where chitchat sends its answer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use sigil_proto::mesh::v1::frame::Body;
use tokio::sync::mpsc;

use super::links::{Inbound, Links};

/// Opens once: the socket takes the membership frames the links receive.
pub(crate) struct StreamTransport {
    links: Arc<Links>,
    inbox: Mutex<Option<mpsc::Receiver<Inbound>>>,
}

impl StreamTransport {
    pub(crate) fn new(links: Arc<Links>, inbox: mpsc::Receiver<Inbound>) -> Self {
        Self {
            links,
            inbox: Mutex::new(Some(inbox)),
        }
    }
}

#[async_trait::async_trait]
impl Transport for StreamTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inbox = self
            .inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .context("the mesh transport opens once")?;
        tracing::debug!(addr = %listen_addr, "membership listening on the mesh");
        Ok(Box::new(StreamSocket {
            links: Arc::clone(&self.links),
            inbox,
        }))
    }
}

struct StreamSocket {
    links: Arc<Links>,
    inbox: mpsc::Receiver<Inbound>,
}

#[async_trait::async_trait]
impl Socket for StreamSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        // Undeliverable frames are dropped, as datagrams are: the next
        // round repeats what matters.
        self.links
            .send(to, Body::Membership(message.serialize_to_vec().into()));
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let inbound = self
                .inbox
                .recv()
                .await
                .context("the mesh's streams are closed")?;
            let mut cursor: &[u8] = &inbound.payload;
            match ChitchatMessage::deserialize(&mut cursor) {
                Ok(message) => return Ok((inbound.from, message)),
                Err(e) => {
                    tracing::debug!(peer = %inbound.from, error = %e, "a membership frame that does not decode is dropped");
                }
            }
        }
    }
}
