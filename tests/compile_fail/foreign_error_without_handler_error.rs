// A team's error type that is a `std::error::Error` but says nothing to
// wharf: the error names `HandlerError` and the one line that fixes it.
#[derive(Debug)]
struct PaymentError;

impl std::fmt::Display for PaymentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("card declined")
    }
}

impl std::error::Error for PaymentError {}

async fn handler(_: u32) -> Result<(), PaymentError> {
    Err(PaymentError)
}

fn main() {
    let _ = wharf::App::new(wharf::Broker::memory()).route("payments", handler);
}
