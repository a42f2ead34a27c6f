use wharf::State;

// `App::new` has no state (its state type is `()`).
async fn handler(State(_): State<String>, _: u32) {}

fn main() {
    let _ = wharf::App::new(wharf::Broker::memory()).route("orders", handler);
}
