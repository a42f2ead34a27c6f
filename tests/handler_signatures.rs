//! Handler signatures, checked by the compiler.
//!
//! A wrong handler signature is refused at compile time, and the first line
//! of the error names what is wrong: the payload type that is not
//! `Deserialize`, the reply type that is not `Serialize` (in `Result<T, E>`
//! or `Reply<T>`), the error type that is not an error or an error type
//! that does not implement `wharf::HandlerError`, the `State<T>` whose `T`
//! is not the app's state type, the return type that is none of wharf's,
//! or a function that is not `async`. The expected compiler output is pinned
//! in `tests/compile_fail/*.stderr` (`TRYBUILD=overwrite` regenerates them;
//! read the result before committing it).
//!
//! The error types that should work do, and are run: a team's own error
//! enum deciding per variant, `Box<dyn Error + Send + Sync>`, the standard
//! errors and wharf's own (`tests/compile_pass/`), and `anyhow::Error` with
//! the feature `anyhow` (`tests/compile_pass_anyhow/`, apart because the
//! glob of `compile_pass` runs in builds without it).

#[test]
fn wrong_handler_signatures_give_readable_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/compile_fail/*.rs");
}

#[test]
fn handler_error_types_compile_and_decide_their_failures() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/compile_pass/*.rs");
    // trybuild builds the cases with the features this test was built with.
    #[cfg(feature = "anyhow")]
    cases.pass("tests/compile_pass_anyhow/*.rs");
}
