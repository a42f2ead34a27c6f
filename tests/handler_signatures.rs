//! A wrong handler signature is refused at compile time with a message that
//! says what a handler is. The expected compiler output is pinned in
//! `tests/compile_fail/*.stderr`.

#[test]
fn wrong_handler_signatures_give_readable_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/compile_fail/*.rs");
}
