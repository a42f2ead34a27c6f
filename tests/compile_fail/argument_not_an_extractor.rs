struct NotAnExtractor;

async fn handler(_: NotAnExtractor) {}

fn main() {
    let _ = wharf::App::new(wharf::Broker::memory()).route("orders", handler);
}
