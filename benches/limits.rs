//! What pre-trade limits add to the gate, beside the clear gate and a plain
//! `AtomicBool` load in the same run. Measured as
//! [`StrategyHandle::submit`](killswitch::runtime::StrategyHandle::submit)
//! makes the checks (the gate, then the strategy's [`PreTradeCheck`], then
//! recording the order), without the ring push that follows either way:
//! * `gate_clear`: no limits configured (the handle holds no checker);
//! * `gate_and_stateless_limits`: price collar, maximum quantity and value;
//! * `gate_and_all_limits`: those plus the message rate (1,000,000 per
//!   second, never reached: the time fed to the checker advances 2 µs per
//!   order) and duplicate detection (1 ms window, every order distinct),
//!   with the clock read the handle makes per order.
//!
//! `cargo bench --bench limits -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use killswitch::clock::mono_ns;
use killswitch::control::ControlBlock;
use killswitch::gate::Gate;
use killswitch::limits::{LimitConfig, PreTradeCheck, ReferencePrices};
use killswitch::order::{OrderIntent, Price, Qty, ScopeTags, Side, PRICE_SCALE};

fn intent() -> OrderIntent {
    OrderIntent {
        tags: ScopeTags::default(),
        side: Side::Buy,
        qty: Qty::from_lots(1),
        price: Price::from_units(100),
        position: Qty::ZERO,
    }
}

fn bench_limits(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let block = Arc::new(ControlBlock::create(dir.path(), "limits").unwrap());
    let gate = Gate::new(block);
    let references = ReferencePrices::new();
    references.set(0, Price::from_units(100));
    let stateless = LimitConfig {
        price_collar_bps: Some(500),
        max_order_qty: Some(Qty::from_lots(10)),
        max_order_value: Some(Price::from_units(100_000)),
        ..LimitConfig::default()
    };
    let all = LimitConfig {
        max_messages_per_second: Some(1_000_000),
        duplicate_window: Some(Duration::from_millis(1)),
        ..stateless
    };
    let mut g = c.benchmark_group("limits");
    let flag = AtomicBool::new(false);
    g.bench_function("baseline_atomic_bool_load", |b| {
        b.iter(|| !black_box(&flag).load(Ordering::Acquire))
    });
    let o = intent();
    g.bench_function("gate_clear", |b| {
        b.iter(|| gate.check(black_box(&o)).is_allow())
    });
    let mut check = PreTradeCheck::new(stateless, references.clone());
    g.bench_function("gate_and_stateless_limits", |b| {
        b.iter(|| {
            let o = black_box(&o);
            gate.check(o).is_allow() && {
                let ok = check.check(o, 0).is_ok();
                check.record_new(o, 0);
                ok
            }
        })
    });
    let mut check = PreTradeCheck::new(all, references.clone());
    let mut n: i64 = 0;
    g.bench_function("gate_and_all_limits", |b| {
        b.iter(|| {
            n += 1;
            // Distinct prices within the 5 % collar: no duplicates.
            let mut o = intent();
            o.price.0 += (n % 400_000) * (PRICE_SCALE / 100_000);
            let o = black_box(&o);
            black_box(mono_ns());
            let now = n as u64 * 2_000;
            gate.check(o).is_allow() && {
                let ok = check.check(o, now).is_ok();
                check.record_new(o, now);
                ok
            }
        })
    });
    g.finish();
}

// criterion_main! expanded by hand: its generated functions carry no docs,
// which the crate's `missing_docs` lint would flag.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_limits(&mut c);
    c.final_summary();
}
