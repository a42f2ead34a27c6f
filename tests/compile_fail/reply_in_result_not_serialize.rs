struct Receipt;

async fn handler(_: u32) -> Result<Receipt, wharf::Error> {
    Ok(Receipt)
}

fn main() {
    let _ = wharf::App::new(wharf::Broker::memory()).route("orders", handler);
}
