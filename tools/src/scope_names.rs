//! Names of the control block's scopes (venues, instruments, accounts,
//! strategies) as reports and the CLI print them.

use killswitch::control::{ControlBlock, ScopeKind};

/// The name registered for scope `index` of `kind`, or `#index` where the
/// block has none (an index from an older run, a slot never named): a
/// report still says which scope it means.
pub fn scope_name(block: &ControlBlock, kind: ScopeKind, index: u16) -> String {
    block
        .name_at(kind, index)
        .unwrap_or_else(|| format!("#{index}"))
}
