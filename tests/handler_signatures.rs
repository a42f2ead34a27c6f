//! A wrong handler signature is refused at compile time, and the first line
//! of the error names what is wrong: the payload type that is not
//! `Deserialize`, the reply type that is not `Serialize` (in `Result<T, E>`
//! or `Reply<T>`), the error type that is not an error, the `State<T>` whose
//! `T` is not the app's state type, the return type that is none of wharf's,
//! or a function that is not `async`. The expected compiler output is pinned
//! in `tests/compile_fail/*.stderr` (`TRYBUILD=overwrite` regenerates them;
//! read the result before committing it).

#[test]
fn wrong_handler_signatures_give_readable_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/compile_fail/*.rs");
}
