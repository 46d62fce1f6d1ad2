//! What the hot-path gate costs, beside its baselines in the same run:
//! a plain `AtomicBool` load (the floor for "check a flag") and a flag read
//! by polling a file's metadata (what a naive cross-process kill file costs).
//!
//! `cargo bench --bench gate`

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::Criterion;
use killswitch::control::{ControlBlock, Mode, ScopeKind, Source, TripRequest, Tripper};
use killswitch::gate::Gate;
use killswitch::order::{OrderIntent, Price, Qty, ScopeTags, Side};

fn intent(tags: ScopeTags) -> OrderIntent {
    OrderIntent {
        tags,
        side: Side::Buy,
        qty: Qty::from_lots(1),
        price: Price::from_units(100),
        position: Qty::ZERO,
    }
}

/// The gate and its baselines.
fn bench_gate(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("gate");

    let clear = Arc::new(ControlBlock::create(dir.path(), "clear").unwrap());
    let gate = Gate::new(clear.clone());
    let o = intent(ScopeTags::default());
    // Measured as callers use it: `if gate.check(&order).is_allow() { send }`.
    g.bench_function("check_clear", |b| {
        b.iter(|| gate.check(black_box(&o)).is_allow())
    });

    let flag = AtomicBool::new(false);
    g.bench_function("baseline_atomic_bool_load", |b| {
        b.iter(|| !black_box(&flag).load(Ordering::Acquire))
    });

    // The like-for-like baseline of an isolated call: a flag another thread
    // or process can set lives behind a pointer its holder keeps (an `Arc`
    // here, the mapping for the gate), so a call through the holder first
    // loads that pointer; the local `AtomicBool` above has a constant
    // address and skips that load.
    let held_flag = Arc::new(AtomicBool::new(false));
    g.bench_function("baseline_arc_atomic_bool_load", |b| {
        b.iter(|| !black_box(&held_flag).load(Ordering::Acquire))
    });
    // The gate reached the same way (its holder's address opaque).
    g.bench_function("check_clear_through_holder", |b| {
        b.iter(|| black_box(&gate).check(&o).is_allow())
    });

    let killed = Arc::new(ControlBlock::create(dir.path(), "killed").unwrap());
    Tripper::new(killed.clone()).trip_global(Mode::Kill, Source::Api, "bench");
    let kgate = Gate::new(killed);
    g.bench_function("check_tripped_kill", |b| {
        b.iter(|| kgate.check(black_box(&o)).is_allow())
    });

    let scoped = Arc::new(ControlBlock::create(dir.path(), "scoped").unwrap());
    let a = scoped.register_name(ScopeKind::Venue, "A").unwrap();
    Tripper::new(scoped.clone())
        .trip(&TripRequest {
            mode: Mode::Kill,
            scopes: vec![(ScopeKind::Venue, "B".into())],
            source: Source::Api,
            reason: "bench".into(),
        })
        .unwrap();
    let sgate = Gate::new(scoped);
    let out_of_scope = intent(ScopeTags {
        venue: a,
        ..Default::default()
    });
    g.bench_function("check_scoped_order_out_of_scope", |b| {
        b.iter(|| sgate.check(black_box(&out_of_scope)).is_allow())
    });

    let kill_file = dir.path().join("KILL");
    std::fs::write(&kill_file, b"0").unwrap();
    g.bench_function("baseline_file_metadata_poll", |b| {
        b.iter(|| {
            std::fs::metadata(black_box(&kill_file))
                .map(|m| m.len() > 1)
                .unwrap_or(true)
        })
    });
    g.finish();

    // The same checks 1,000 at a time, as an order loop makes them. Per
    // single call above, `black_box`'s memory clobber makes the compiler
    // reload the gate's pointer into the mapping on every call (a second,
    // dependent load the static `AtomicBool` does not have); in a loop the
    // pointer stays in a register, as it does in an engine.
    let mut g = c.benchmark_group("gate_x1000");
    g.throughput(criterion::Throughput::Elements(1000));
    g.bench_function("check_clear", |b| {
        b.iter(|| {
            let o = black_box(&o);
            (0..1000).filter(|_| gate.check(o).is_allow()).count()
        })
    });
    g.bench_function("baseline_atomic_bool_load", |b| {
        b.iter(|| {
            let f = black_box(&flag);
            (0..1000).filter(|_| !f.load(Ordering::Acquire)).count()
        })
    });
    let heap_flag = Arc::new(AtomicBool::new(false));
    g.bench_function("baseline_arc_atomic_bool_load", |b| {
        b.iter(|| {
            let f = black_box(&heap_flag);
            (0..1000).filter(|_| !f.load(Ordering::Acquire)).count()
        })
    });
    // The same flag with what a caller does when it is set (a call to an
    // out-of-line reject path, as the gate's tripped path): counting
    // `!flag` alone compiles to a branch-free add, which no real check is.
    g.bench_function("baseline_atomic_bool_load_with_reject_path", |b| {
        b.iter(|| {
            let f = black_box(&flag);
            (0..1000)
                .filter(|_| !f.load(Ordering::Acquire) || rejected_slow_path(&o))
                .count()
        })
    });
    // Two more like-for-like baselines, to tell what the gate's loop pays
    // for: the same reject path on an 8-byte word tested against a mask (the
    // gate's shape, on the heap), and on a byte in a shared file mapping
    // (the gate's memory, the flag's width).
    let word = std::sync::atomic::AtomicU64::new(0);
    g.bench_function("baseline_atomic_u64_mask_with_reject_path", |b| {
        b.iter(|| {
            let w = black_box(&word);
            (0..1000)
                .filter(|_| w.load(Ordering::Acquire) & 0x1f == 0 || rejected_slow_path(&o))
                .count()
        })
    });
    let mapped = dir.path().join("mapped-flag");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&mapped)
        .unwrap();
    file.set_len(4096).unwrap();
    // SAFETY: a fresh file of this bench's own, mapped shared, read and
    // written only through the atomic below while the map lives.
    let map = unsafe { memmap2::MmapMut::map_mut(&file).unwrap() };
    // SAFETY: the mapping is page-aligned and 4096 bytes long; an
    // AtomicBool has alignment 1 and lives inside it for the map's life.
    let mapped_flag = unsafe { &*(map.as_ptr() as *const AtomicBool) };
    g.bench_function("baseline_mapped_atomic_bool_with_reject_path", |b| {
        b.iter(|| {
            let f = black_box(mapped_flag);
            (0..1000)
                .filter(|_| !f.load(Ordering::Acquire) || rejected_slow_path(&o))
                .count()
        })
    });
    g.finish();
}

/// Stands for a reject path: out of line, as the gate's tripped path is.
#[cold]
#[inline(never)]
fn rejected_slow_path(o: &OrderIntent) -> bool {
    black_box(o).qty.0 < 0
}

// criterion_main! expanded by hand: its generated functions carry no docs,
// which the crate's `missing_docs` lint would flag.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_gate(&mut c);
    c.final_summary();
}
