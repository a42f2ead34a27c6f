//! Broker selection by `WHARF_BROKER_URL`. One test per process state, so
//! this file holds a single test that sets the variable in sequence.

use wharf::{BROKER_URL_ENV, Broker, BrokerErrorKind};

#[tokio::test]
async fn broker_is_chosen_by_url_and_secrets_are_not_printed() {
    // SAFETY: this test binary has one test and no other threads read the
    // environment while it changes.
    unsafe { std::env::remove_var(BROKER_URL_ENV) };
    assert_eq!(
        Broker::from_env().await.unwrap().kind(),
        "memory",
        "unset means in-memory"
    );
    unsafe { std::env::set_var(BROKER_URL_ENV, "memory://") };
    assert_eq!(Broker::from_env().await.unwrap().kind(), "memory");
    unsafe { std::env::set_var(BROKER_URL_ENV, "redis://user:s3cret@127.0.0.1") };
    let error = Broker::from_env().await.unwrap_err();
    assert_eq!(error.kind(), BrokerErrorKind::Config);
    assert!(!format!("{error} {error:?}").contains("s3cret"));
}
