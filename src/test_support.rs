//! What the crate's own broker tests share: the skip policy of
//! `tests/support` (a missing broker is a loud skip, and a failure under
//! `CI=true`).

/// Whether this is CI (`CI=true` or `CI=1`), where nothing may skip.
pub(crate) fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips `test` loudly because of `why`, or fails under CI.
pub(crate) fn skip(test: &str, why: &str) {
    assert!(!ci(), "CI=true and {test} cannot run: {why}");
    eprintln!("\n!!! SKIPPED: {test}: {why}. With CI=true this fails.\n");
}
