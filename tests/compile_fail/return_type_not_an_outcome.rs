async fn handler(_: u32) -> String {
    String::new()
}

fn main() {
    let _ = wharf::App::new(wharf::Broker::memory()).route("orders", handler);
}
