//! Measures the spool: fills it with N undelivered TaskOOMs, then drains it as delivery
//! would (front, pop), and prints the time and the bytes written (from /proc/self/io).
//! `cargo run --release -p observer --example spool_drain -- [N] [DIR]`

use std::time::Instant;

use observer::sinks::spool::{Pending, Spool};

fn io_counters() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("wchar:"), field("write_bytes:"))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("oomx-spool-bench-{}", std::process::id()))
        });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut s = Spool::open(Some(&dir));
    let (w0, b0) = io_counters();
    let t0 = Instant::now();
    for i in 0..n {
        s.push(Pending {
            namespace: "k8s.io".into(),
            container_id: format!("{i:064x}"),
            ktime_ns: i as u64,
        });
    }
    // The writer thread appends and syncs; done when it says so.
    s.settle();
    let fill = t0.elapsed();
    let (w1, b1) = io_counters();
    let t1 = Instant::now();
    let mut delivered = 0usize;
    while s.front().is_some() {
        s.pop_front();
        delivered += 1;
    }
    // One sync per delivery run, as the publisher does.
    s.sync();
    s.settle();
    let drain = t1.elapsed();
    let (w2, b2) = io_counters();
    println!(
        "entries={n} fill_s={:.3} fill_wchar={} fill_write_bytes={} drain_s={:.3} drain_wchar={} drain_write_bytes={} delivered={delivered}",
        fill.as_secs_f64(),
        w1 - w0,
        b1 - b0,
        drain.as_secs_f64(),
        w2 - w1,
        b2 - b1
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
