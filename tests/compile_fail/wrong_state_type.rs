use wharf::State;

async fn handler(State(_): State<String>, _: u32) {}

fn main() {
    let _ = wharf::App::with_state(wharf::Broker::memory(), 7u64).route("orders", handler);
}
