//! What a send guard (the several-senders protocol, `killswitch::senders`)
//! costs a sending thread, beside an unguarded send in the same run, and
//! what the drain's barrier costs once per kill.
//!
//! * `send/unguarded`: load the state word, decide, "write" (the baseline:
//!   a sender that checks the gate and writes, with no protocol at all).
//! * `send/guarded_membarrier_form`: `enter` (in_send odd, compiler fence,
//!   load), decide, write, `leave`: the hot path when the drain has
//!   `membarrier`.
//! * `send/guarded_seqcst_form`: the same with a SeqCst fence in `enter`
//!   (the fallback where the kernel lacks `membarrier`).
//! * `drain_barrier/membarrier` and `drain_barrier/seqcst_fence`: the
//!   drain's side, paid once per kill generation.
//!
//! The write is a `black_box` of the order (a real venue write, and the
//! registry's registration, are the same for every variant and far larger).
//!
//! Run: `cargo bench --bench senders`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::Criterion;
use crossbeam_utils::CachePadded;
use killswitch::control::StateWord;
use killswitch::order::{OrderId, Price, Qty, ScopeTags, Side};
use killswitch::senders::protocol::{drain_barrier, enter, leave};
use killswitch::venue::NewOrder;

fn order() -> NewOrder {
    NewOrder {
        id: OrderId(1),
        tags: ScopeTags::default(),
        side: Side::Buy,
        price: Price::from_units(100),
        qty: Qty::from_lots(1),
    }
}

fn send(c: &mut Criterion) {
    let mut g = c.benchmark_group("send");
    let state = CachePadded::new(AtomicU64::new(0));
    let in_send = CachePadded::new(AtomicU64::new(0));
    let o = order();
    g.bench_function("unguarded", |b| {
        b.iter(|| {
            let w = StateWord(state.load(Ordering::Acquire));
            if !w.is_active() {
                black_box(&o);
            }
        })
    });
    let mut seq = 0u64;
    g.bench_function("guarded_membarrier_form", |b| {
        b.iter(|| {
            let w = enter(&*in_send, seq, &*state, false);
            if !w.is_active() {
                black_box(&o);
            }
            leave(&*in_send, seq);
            seq += 2;
        })
    });
    g.bench_function("guarded_seqcst_form", |b| {
        b.iter(|| {
            let w = enter(&*in_send, seq, &*state, true);
            if !w.is_active() {
                black_box(&o);
            }
            leave(&*in_send, seq);
            seq += 2;
        })
    });
    g.finish();
}

fn barrier(c: &mut Criterion) {
    let mut g = c.benchmark_group("drain_barrier");
    if killswitch::senders::membarrier_available() {
        g.bench_function("membarrier", |b| b.iter(|| drain_barrier(true)));
    } else {
        eprintln!("drain_barrier/membarrier: not offered by this kernel; skipped");
    }
    g.bench_function("seqcst_fence", |b| b.iter(|| drain_barrier(false)));
    g.finish();
}

// criterion_main! expanded by hand: its generated functions carry no docs,
// which the crate's `missing_docs` lint would flag.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    send(&mut c);
    barrier(&mut c);
    c.final_summary();
}
