struct Quote;

async fn handler(_: u32) -> wharf::Reply<Quote> {
    wharf::Reply(Quote)
}

fn main() {
    let _ = wharf::App::new(wharf::Broker::memory()).route("orders", handler);
}
