//! What an identity grants: scopes by name, an open platform, and nobody.

use super::*;

#[test]
fn scopes_round_trip_and_unknown_names_are_none() {
    for scope in Scope::ALL {
        assert_eq!(Scope::parse(scope.as_str()), Some(scope));
    }
    assert_eq!(Scope::parse("stock:write"), None);
}

#[test]
fn an_open_platform_grants_everything_explicitly_and_buckets_by_address() {
    let a: IpAddr = "10.0.0.1".parse().expect("ip");
    let b: IpAddr = "10.0.0.2".parse().expect("ip");
    let anonymous = Identity::unauthenticated(Some(a));
    assert!(Scope::ALL.iter().all(|s| anonymous.allows(*s)));
    assert!(anonymous.may_read_at("any"));
    assert_eq!(
        anonymous.location_grant(),
        stockflow_domain::LocationGrant::Any
    );
    let key = IdempotencyKey::parse("k1").expect("valid");
    assert_eq!(anonymous.scoped_key(key.clone()), ScopedKey::new(None, key));
    assert_ne!(
        anonymous.rate_key(),
        Identity::unauthenticated(Some(b)).rate_key()
    );
}

#[test]
fn nobody_holds_nothing() {
    let nobody = Identity::nobody(None);
    assert!(Scope::ALL.iter().all(|s| !nobody.allows(*s)));
    assert!(!nobody.may_read_at("s1"));
}
