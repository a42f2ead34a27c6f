// Only `Serialize` derived: the payload type also needs `Deserialize`.
#[derive(serde::Serialize)]
struct Order {
    id: u64,
}

async fn handler(order: Order) {
    let _ = order.id;
}

fn main() {
    let _ = wharf::App::new(wharf::Broker::memory()).route("orders", handler);
}
