async fn handler(_: u32) -> Result<(), String> {
    Err("out of stock".to_owned())
}

fn main() {
    let _ = wharf::App::new(wharf::Broker::memory()).route("orders", handler);
}
