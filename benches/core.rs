//! In-process core throughput (not a test; run with `cargo bench --bench core`).
//!
//! Prints msgs/s for one queue 1→1 and 4→4, topic fan-out 1→10 and 1→1,000, and the
//! cost of matching a topic name with 1k and 100k subscriptions in the trie, and one
//! route with and without a jq transform on a 1 KiB JSON body (`CORE_BENCH_JQ_ONLY=1`
//! runs only that).

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::core::trie::SubjectTrie;
use switchboard::core::{
    ConsumeOptions, Core, CoreConfig, Destination, Message, Pattern, QueueOptions,
};
use switchboard::counter::{PerThread, Row, Sharded};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn core() -> Core {
    Core::new(CoreConfig {
        default_queue: QueueOptions {
            max_length: 100_000,
            ..QueueOptions::default()
        },
        default_subscription: QueueOptions {
            max_length: 100_000,
            durable: false,
            auto_delete: true,
            ..QueueOptions::default()
        },
        ..CoreConfig::default()
    })
}

/// `producers` tasks publish `per` messages each to one queue; `consumers` drain it.
fn queue(producers: usize, consumers: usize, per: usize) -> f64 {
    rt().block_on(async {
        let core = core();
        let total = producers * per;
        let body = bytes::Bytes::from_static(&[b'x'; 100]);
        let mut cs = Vec::new();
        for _ in 0..consumers {
            let c = core
                .consume("bench", ConsumeOptions::auto_ack(1024))
                .unwrap();
            cs.push(tokio::spawn(async move {
                let mut n = 0usize;
                let mut buf = Vec::with_capacity(1024);
                while let Ok(got) =
                    tokio::time::timeout(Duration::from_millis(200), c.recv_many(1024, &mut buf))
                        .await
                {
                    let Ok(got) = got else { break };
                    n += got;
                    buf.clear();
                }
                n
            }));
        }
        let start = Instant::now();
        let mut ps = Vec::new();
        for _ in 0..producers {
            let core = core.clone();
            let body = body.clone();
            ps.push(tokio::spawn(async move {
                let d = Destination::queue("bench");
                for _ in 0..per {
                    core.publish(&d, Message::new(body.clone())).await.unwrap();
                }
            }));
        }
        for p in ps {
            p.await.unwrap();
        }
        let q = core.queue("bench").unwrap();
        while q.stats().delivered < total as u64 {
            tokio::task::yield_now().await;
        }
        let secs = start.elapsed().as_secs_f64();
        let mut got = 0;
        for c in cs {
            got += c.await.unwrap();
        }
        assert_eq!(got, total);
        total as f64 / secs
    })
}

/// One publisher, `subs` subscribers; returns deliveries/s. `batch` > 1 publishes with
/// `Core::publish_batch` (one lock per subscriber per batch).
fn fanout(subs: usize, messages: usize, batch: usize) -> f64 {
    rt().block_on(async {
        let core = core();
        let mut cs = Vec::new();
        for _ in 0..subs {
            let c = core
                .subscribe(&["fan.*"], ConsumeOptions::auto_ack(4096))
                .unwrap();
            cs.push(tokio::spawn(async move {
                let mut n = 0usize;
                let mut buf = Vec::with_capacity(4096);
                while n < messages {
                    match c.recv_many(4096, &mut buf).await {
                        Ok(got) => n += got,
                        Err(_) => break,
                    }
                    buf.clear();
                }
                n
            }));
        }
        let body = bytes::Bytes::from_static(&[b'x'; 100]);
        let d = Destination::topic("fan.out");
        let start = Instant::now();
        if batch <= 1 {
            for _ in 0..messages {
                core.publish(&d, Message::new(body.clone())).await.unwrap();
            }
        } else {
            for _ in 0..messages / batch {
                let msgs = (0..batch).map(|_| Message::new(body.clone())).collect();
                core.publish_batch(&d, msgs).await.unwrap();
            }
        }
        let mut total = 0;
        for c in cs {
            total += c.await.unwrap();
        }
        assert_eq!(total, subs * messages);
        total as f64 / start.elapsed().as_secs_f64()
    })
}

/// Average ns per trie lookup with `n` distinct subscriptions (plus a few wildcards).
fn matching(n: usize) -> f64 {
    let mut trie = SubjectTrie::new();
    for i in 0..n {
        trie.insert(&Pattern::parse(&format!("dev.{i}.temp")).unwrap(), i);
    }
    for (i, p) in ["dev.*.temp", "dev.#", "#", "dev.*.*"].iter().enumerate() {
        trie.insert(&Pattern::parse(p).unwrap(), n + i);
    }
    let names: Vec<String> = (0..10_000)
        .map(|i| format!("dev.{}.temp", (i * 7919) % n))
        .collect();
    let rounds = 100;
    let mut out = Vec::with_capacity(16);
    let start = Instant::now();
    for _ in 0..rounds {
        for name in &names {
            out.clear();
            trie.matches(name, &mut out);
            assert!(out.len() >= 4);
        }
    }
    start.elapsed().as_nanos() as f64 / (rounds * names.len()) as f64
}

/// A 1 KiB sensor reading, as JSON.
fn reading_1k() -> bytes::Bytes {
    let samples: Vec<String> = (0..100)
        .map(|i| format!("{}.{}", 20 + i % 7, i % 10))
        .collect();
    let body = format!(
        r#"{{"device":"t-17","site":"north","temp_f":71.6,"rh":40,"ts":"2026-12-05T08:00:00Z","fw":"2.4.1","samples":[{}],"note":"{}"}}"#,
        samples.join(","),
        "x".repeat(420)
    );
    assert!((1000..=1100).contains(&body.len()), "{}", body.len());
    bytes::Bytes::from(body)
}

/// CPU time of the whole process so far (all threads), µs: on a shared machine the
/// CPU a message costs is steadier than the wall time it takes.
fn process_cpu_us() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 * 1e6 + v.tv_usec as f64;
    t(u.ru_utime) + t(u.ru_stime)
}

/// One route `in` → `out` (with `transform`, if any) in front of the core: one task
/// publishes `n` 1 KiB JSON messages through the router, one consumer drains `out`.
/// Returns (msgs/s, CPU µs per message).
fn routed(transform: &str, n: usize) -> (f64, f64) {
    let text = format!(
        "routes:\n  - name: r\n    from: {{ queue: in }}\n    to: [ {{ queue: out }} ]\n{transform}"
    );
    let table = switchboard::routes::compile_sources(
        &[("bench.yaml".to_owned(), text)],
        &switchboard::routes::CompileContext::default(),
    )
    .expect("bench route compiles");
    rt().block_on(async {
        let core = core();
        let router = switchboard::router::Router::new(
            core.clone(),
            Arc::new(arc_swap::ArcSwap::from_pointee(table)),
        );
        let body = reading_1k();
        let c = core.consume("out", ConsumeOptions::auto_ack(1024)).unwrap();
        let drain = tokio::spawn(async move {
            let mut got = 0usize;
            let mut buf = Vec::with_capacity(1024);
            while got < n {
                got += c.recv_many(1024, &mut buf).await.unwrap();
                buf.clear();
            }
            got
        });
        let start = Instant::now();
        let cpu = process_cpu_us();
        let d = Destination::queue("in");
        for _ in 0..n {
            let mut m = Message::new(body.clone());
            m.content_type = Some("application/json".to_owned());
            router.publish(d.clone(), m).await.unwrap();
        }
        assert_eq!(drain.await.unwrap(), n);
        (
            n as f64 / start.elapsed().as_secs_f64(),
            (process_cpu_us() - cpu) / n as f64,
        )
    })
}

/// Median and spread (min, max) of `runs` measurements of each figure `f` returns,
/// after one warm-up run.
fn repeat(runs: usize, mut f: impl FnMut() -> (f64, f64)) -> [(f64, f64, f64); 2] {
    f();
    let (mut a, mut b): (Vec<f64>, Vec<f64>) = (0..runs).map(|_| f()).unzip();
    [&mut a, &mut b].map(|v| {
        v.sort_by(f64::total_cmp);
        (v[runs / 2], v[0], v[runs - 1])
    })
}

/// jq's cost per message: one route without a transform, with a header transform, and
/// with a jq reshape of the 1 KiB body.
fn jq_cost() {
    const JQ: &str = "    transform:\n      jq: '{device: .body.device, site: .body.site, celsius: ((.body.temp_f - 32) * 5 / 9), at: .body.ts, mean: (.body.samples | add / length)}'\n";
    let n = 50_000;
    let rows = [
        ("route, no transform", String::new()),
        (
            "route, set_headers",
            "    transform: { set_headers: { via: bench } }\n".to_owned(),
        ),
        (
            "route, transform.jq '.body'",
            "    transform: { jq: '.body' }\n".to_owned(),
        ),
        ("route, transform.jq reshape", JQ.to_owned()),
    ];
    let mut base = 0.0;
    for (i, (name, t)) in rows.iter().enumerate() {
        let [(med, lo, hi), (cpu, cpu_lo, cpu_hi)] = repeat(5, || routed(t, n));
        if i == 0 {
            base = cpu;
        }
        println!(
            "{name:<30} {med:>9.0} msgs/s (median of 5, {lo:.0}–{hi:.0}); CPU {cpu:>6.2} µs/msg ({cpu_lo:.2}–{cpu_hi:.2}), +{:.2} µs over no transform",
            cpu - base
        );
    }
}

/// The counters `counting` compares.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// One `AtomicU64` every thread adds to.
    Shared,
    /// `switchboard::counter::Sharded`.
    Sharded,
    /// `switchboard::counter::PerThread`.
    PerThread,
}

static PER_THREAD: PerThread<1> = PerThread::new();
thread_local! { static ROW: Row<1> = PER_THREAD.row(); }

/// CPU time this thread has used, ns (wall time would count the other processes of a
/// busy machine).
fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// CPU ns per increment when `threads` threads each add to one counter `per` times.
fn counting(threads: usize, per: u64, kind: Kind) -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    let shared = Arc::new(AtomicU64::new(0));
    let shards = Arc::new(Sharded::<1>::new());
    let before = PER_THREAD.get(0);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (shared, shards) = (Arc::clone(&shared), Arc::clone(&shards));
            std::thread::spawn(move || {
                let start = thread_cpu_ns();
                for _ in 0..per {
                    let n = std::hint::black_box(1);
                    match kind {
                        Kind::Shared => {
                            shared.fetch_add(n, Ordering::Relaxed);
                        }
                        Kind::Sharded => shards.add(0, n),
                        Kind::PerThread => ROW.with(|r| r.add(0, n)),
                    }
                }
                thread_cpu_ns() - start
            })
        })
        .collect();
    let cpu: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let total = shared.load(Ordering::Relaxed) + shards.get(0) + (PER_THREAD.get(0) - before);
    assert_eq!(total, threads as u64 * per);
    cpu as f64 / (threads as u64 * per) as f64
}

/// CPU ns per `trace::reparent` on the headers of a benchmark message (`t` and, when
/// given, one more header): what tracing adds to a publish before routing.
fn reparenting(extra: Option<(&str, &str)>) -> f64 {
    use switchboard::core::Headers;
    use switchboard::translate::trace;
    let mut base = Headers::new();
    base.append("t", "1764900000000000000");
    if let Some((k, v)) = extra {
        base.append(k, v);
    }
    let n = 2_000_000;
    let mut copies: Vec<Headers> = (0..n).map(|_| base.clone()).collect();
    let start = thread_cpu_ns();
    let mut traced = 0usize;
    for h in copies.iter_mut() {
        traced += usize::from(trace::reparent(h, false).is_some());
    }
    let ns = (thread_cpu_ns() - start) as f64 / n as f64;
    assert_eq!(
        traced,
        if extra.is_some_and(|(k, _)| k == "traceparent") {
            n
        } else {
            0
        }
    );
    ns
}

fn main() {
    let m = |v: f64| format!("{:>8.2} M", v / 1e6);
    if std::env::var_os("CORE_BENCH_JQ_ONLY").is_some() {
        jq_cost();
        return;
    }
    println!("switchboard core benchmark (in-process, 100-byte bodies, release build)");
    // W3C trace context (src/translate/trace.rs): CPU time per message before routing.
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    println!(
        "trace context: no traceparent {:>5.1} ns/msg, an ordinary header {:>5.1}, a traceparent (re-parented) {:>5.1}",
        reparenting(None),
        reparenting(Some(("x-not-traced", TP))),
        reparenting(Some(("traceparent", TP)))
    );
    if std::env::var_os("CORE_BENCH_TRACE_ONLY").is_some() {
        return;
    }
    // Hot-path counters (src/counter.rs): CPU time per increment.
    for threads in [1, 2] {
        let per = 20_000_000;
        let [shared, sharded, per_thread] =
            [Kind::Shared, Kind::Sharded, Kind::PerThread].map(|k| counting(threads, per, k));
        println!(
            "counter, {threads} thread(s): shared AtomicU64 {shared:>5.1} ns/add, sharded {sharded:>5.1}, per thread {per_thread:>5.1}"
        );
    }
    if std::env::var_os("CORE_BENCH_COUNTERS_ONLY").is_some() {
        return;
    }
    let q11 = queue(1, 1, 2_000_000);
    println!("queue 1→1        {} msgs/s", m(q11));
    let q44 = queue(4, 4, 500_000);
    println!("queue 4→4        {} msgs/s", m(q44));
    let f10 = fanout(10, 200_000, 1);
    println!("topic 1→10       {} deliveries/s", m(f10));
    let f1k = fanout(1000, 5_000, 1);
    println!("topic 1→1,000    {} deliveries/s", m(f1k));
    let b10 = fanout(10, 200_000, 64);
    println!("topic 1→10, batches of 64     {} deliveries/s", m(b10));
    let b1k = fanout(1000, 5_120, 64);
    println!("topic 1→1,000, batches of 64  {} deliveries/s", m(b1k));
    let m1k = matching(1_000);
    let m100k = matching(100_000);
    println!("trie match, 1k subscriptions     {m1k:>7.0} ns/lookup");
    println!(
        "trie match, 100k subscriptions   {m100k:>7.0} ns/lookup  (×{:.2} for 100× the subscriptions)",
        m100k / m1k
    );
    jq_cost();
    let _ = Arc::new(());
}
