fn handler(_: u32) {}

fn main() {
    let _ = wharf::App::new(wharf::Broker::memory()).route("orders", handler);
}
