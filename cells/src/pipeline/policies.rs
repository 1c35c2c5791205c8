//! ACL policies as stored in the barrier, with parsed policies and compiled
//! ACLs cached in memory.
//!
//! Policies are control-plane state, shared by every cell: a write goes
//! through the cell's replica (`crate::control_plane`), which stores the
//! policy's register and its op, and, in the same batch, the text in force at
//! `sys/policy/<name>` (original HCL or JSON), where this store reads it. A
//! policy written in another cell arrives the same way. `default` exists from the start (its built-in text until someone
//! writes it); `root` is never stored. Compiled ACLs are cached per set of
//! policy names; any policy write clears the cache, so a changed policy
//! applies to the next request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::api_error::ApiError;
use sigil_control_plane::model::PolicyDoc;
use sigil_control_plane::{Key, Value};

use crate::barrier::Barrier;
use crate::control_plane::{ControlPlane, POLICY_VIEW_PREFIX as POLICY_PREFIX};
use crate::policy::{self, Acl, Policy, builtin};

#[derive(Debug)]
pub struct PolicyStore {
    barrier: Barrier,
    control: Arc<ControlPlane>,
    parsed: RwLock<HashMap<String, Arc<Policy>>>,
    acls: RwLock<HashMap<Vec<String>, Arc<Acl>>>,
}

impl PolicyStore {
    pub fn new(barrier: Barrier, control: Arc<ControlPlane>) -> Self {
        Self {
            barrier,
            control,
            parsed: RwLock::default(),
            acls: RwLock::default(),
        }
    }

    /// The named policy, if it exists (`default` always does).
    pub fn get(&self, name: &str) -> Result<Option<Arc<Policy>>, ApiError> {
        let name = name.to_lowercase();
        if let Some(p) = self
            .parsed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
        {
            return Ok(Some(p.clone()));
        }
        let text = match self.barrier.get(&format!("{POLICY_PREFIX}{name}"))? {
            Some(raw) => String::from_utf8_lossy(&raw).into_owned(),
            None if name == builtin::DEFAULT_POLICY_NAME => builtin::DEFAULT_POLICY.to_owned(),
            None if name == builtin::RESPONSE_WRAPPING_POLICY_NAME => {
                builtin::RESPONSE_WRAPPING_POLICY.to_owned()
            }
            None => return Ok(None),
        };
        let parsed = Arc::new(Policy::parse(&name, &text).map_err(|e| {
            tracing::error!(policy = %name, error = %e, "stored policy does not parse");
            ApiError::Internal(format!("stored policy {name:?} is corrupt"))
        })?);
        self.parsed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, parsed.clone());
        Ok(Some(parsed))
    }

    /// Parses and stores a policy. Bad text is a 400 naming line and column.
    pub async fn put(&self, name: &str, text: &str) -> Result<(), ApiError> {
        let name = name.to_lowercase();
        let name = policy::check_writable_name(&name)
            .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
        let parsed =
            Policy::parse(&name, text).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
        self.control
            .write(
                Key::Policy { name: name.clone() },
                Some(Value::Policy(PolicyDoc {
                    text: text.to_owned(),
                })),
            )
            .await?;
        self.parsed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, Arc::new(parsed));
        self.invalidate();
        Ok(())
    }

    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        let name = name.to_lowercase();
        let name = policy::check_deletable_name(&name)
            .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
        self.control
            .write(Key::Policy { name: name.clone() }, None)
            .await?;
        self.parsed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name);
        self.invalidate();
        Ok(())
    }

    /// Every policy name, `default` and `root` included, sorted.
    pub fn list(&self) -> Result<Vec<String>, ApiError> {
        let mut names = self.barrier.list(POLICY_PREFIX)?;
        for b in [builtin::DEFAULT_POLICY_NAME, policy::ROOT_POLICY_NAME] {
            if !names.iter().any(|n| n == b) {
                names.push(b.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// The ACL for a token holding `names`; policies that do not exist grant
    /// nothing (as in Vault), `root` grants everything.
    pub fn acl(&self, names: &[String]) -> Result<Arc<Acl>, ApiError> {
        let mut key: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
        key.sort();
        key.dedup();
        if let Some(acl) = self
            .acls
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(acl.clone());
        }
        let acl = if key.iter().any(|n| n == "root") {
            Arc::new(Acl::root())
        } else {
            let mut policies = Vec::new();
            for n in &key {
                if let Some(p) = self.get(n)? {
                    policies.push(p);
                }
            }
            Arc::new(Acl::new(&policies))
        };
        self.acls
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, acl.clone());
        Ok(acl)
    }

    fn invalidate(&self) {
        self.acls.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Forgets every parsed policy and compiled ACL: policies may have been
    /// changed on another node of the cell.
    pub fn forget_all(&self) {
        self.parsed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.invalidate();
    }
}
