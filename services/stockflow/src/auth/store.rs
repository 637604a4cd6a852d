//! Which store a command comes from. A store agent says so in `stockflow-store` (and its
//! sequence number in `stockflow-store-seq`); the region believes it only when the
//! caller's credentials are that store's (`store_id` claim, or a principal's grant), so
//! one store's token cannot pass its sales off as another's in the audit trail.

use stockflow_domain::{StoreId, StoreOrigin};

use super::Identity;

/// The header a store agent names its store in.
pub const STORE_HEADER: &str = "stockflow-store";
/// The header a store agent numbers its commands in.
pub const STORE_SEQ_HEADER: &str = "stockflow-store-seq";

/// A command said it came from a store its credentials are not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", match .held {
    Some(held) => format!("this token is store {held}'s; it may not send commands as store {said}"),
    None => format!("this token names no store (mint one with a store_id claim); it may not send commands as store {said}"),
})]
pub struct StoreMismatch {
    /// The store the request named.
    pub said: String,
    /// The store the credentials hold, if any.
    pub held: Option<String>,
}

impl Identity {
    /// The store the caller's credentials stand for.
    pub fn store_id(&self) -> Option<&str> {
        self.store_id.as_deref()
    }

    /// The store a command comes from: the credentials' store, which a `said` store must
    /// match. Credentials without a store may not name one, except on a platform that runs
    /// without authentication, where whoever reaches the port is trusted with everything
    /// (its word is recorded as given).
    pub fn store_origin(
        &self,
        said: Option<&StoreId>,
        seq: Option<u64>,
    ) -> Result<Option<StoreOrigin>, StoreMismatch> {
        let authenticated = self.actor_tag.is_some();
        let id = match (&self.store_id, said) {
            (Some(held), Some(said)) if held != said.as_str() => {
                return Err(StoreMismatch {
                    said: said.to_string(),
                    held: Some(held.clone()),
                });
            }
            (Some(held), _) => held.clone(),
            (None, Some(said)) if authenticated => {
                return Err(StoreMismatch {
                    said: said.to_string(),
                    held: None,
                });
            }
            (None, Some(said)) => said.to_string(),
            (None, None) => return Ok(None),
        };
        Ok(Some(StoreOrigin { id, seq }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::auth::Grant;

    fn store(id: &str) -> StoreId {
        StoreId::parse(id).expect("a store id")
    }

    fn agent_of(store_id: Option<&str>) -> Identity {
        Identity::from_principal(Grant {
            principal: "cn:agent".into(),
            scopes: BTreeSet::new(),
            locations: Some(BTreeSet::from(["l1".to_string()])),
            store_id: store_id.map(str::to_string),
        })
    }

    #[test]
    fn a_store_s_credentials_name_its_store_whatever_the_request_says() {
        let agent = agent_of(Some("store-1"));
        let origin = |id: &str, seq| Some(StoreOrigin { id: id.into(), seq });
        assert_eq!(agent.store_origin(None, None), Ok(origin("store-1", None)));
        assert_eq!(
            agent.store_origin(Some(&store("store-1")), Some(7)),
            Ok(origin("store-1", Some(7)))
        );
        assert_eq!(
            agent.store_origin(Some(&store("store-2")), Some(7)),
            Err(StoreMismatch {
                said: "store-2".into(),
                held: Some("store-1".into())
            })
        );
    }

    #[test]
    fn credentials_without_a_store_may_not_name_one_unless_nothing_is_checked() {
        let central = agent_of(None);
        assert_eq!(central.store_origin(None, Some(3)), Ok(None));
        assert!(central.store_origin(Some(&store("store-1")), None).is_err());
        let open = Identity::unauthenticated(None);
        assert_eq!(
            open.store_origin(Some(&store("store-1")), Some(3)),
            Ok(Some(StoreOrigin {
                id: "store-1".into(),
                seq: Some(3)
            }))
        );
    }
}
