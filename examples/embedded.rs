//! Switchboard's core and routing table embedded in a program of your own: no daemon,
//! no sockets. Run with `cargo run --example embedded`.
//!
//! A route diverts everything sent to the `orders.incoming` queue to the `orders` work
//! queue and an audit topic; two workers compete for the orders, an auditor sees every
//! one.

use std::sync::Arc;

use arc_swap::ArcSwap;
use switchboard::core::{ConsumeOptions, Core, Destination, Message};
use switchboard::router::Router;
use switchboard::routes::{CompileContext, compile_sources};

const ROUTES: &str = r#"
routes:
  - name: orders-intake
    from: { queue: orders.incoming }
    to:
      - queue: orders
      - topic: audit.orders
    transform:
      set_headers: { x-intake: embedded-example }
"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let table = compile_sources(
        &[("example.yaml".into(), ROUTES.into())],
        &CompileContext::default(),
    )
    .map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let router = Router::new(Core::default(), Arc::new(ArcSwap::from_pointee(table)));
    let core = router.core().clone();

    let auditor = core.subscribe(&["audit.#"], ConsumeOptions::auto_ack(100))?;
    let workers = [
        core.consume("orders", ConsumeOptions::manual(1))?,
        core.consume("orders", ConsumeOptions::manual(1))?,
    ];

    for i in 1..=4 {
        let m = Message::new(format!("order {i}")).with_content_type("text/plain");
        router
            .publish(Destination::queue("orders.incoming"), m)
            .await?;
    }

    for round in 0..2 {
        for (w, consumer) in workers.iter().enumerate() {
            if let Some(d) = consumer.recv().await {
                println!(
                    "round {round}: worker {w} got {:?} (x-intake: {:?})",
                    String::from_utf8_lossy(&d.message.body),
                    d.message.headers.get("x-intake")
                );
                consumer.ack(d.tag);
            }
        }
    }
    let mut audit = Vec::new();
    auditor.try_recv_many(100, &mut audit)?;
    println!(
        "auditor saw {} orders on {}",
        audit.len(),
        audit[0].destination
    );
    Ok(())
}
