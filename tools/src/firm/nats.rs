//! Talking to NATS: connection options shared by the relay and the `firm`
//! commands, the two buckets, and reading a key into the relay's view
//! (verifying a reset against the key's history).

use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation, Store};
use async_nats::jetstream::stream;
use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::record::{Action, FirmRecord};
use super::view::{KeyContent, KeyEntry};

/// Default bucket name.
pub const DEFAULT_BUCKET: &str = "KILLSWITCH_FIRM";
/// Revisions kept per key: the firm audit (64 is NATS's maximum).
pub const HISTORY: i64 = 64;
/// Deadline of one NATS request made by the relay or a command.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the firm state lives.
#[derive(clap::Args, Debug, Clone)]
pub struct NatsArgs {
    /// NATS servers, comma-separated (credentials in the URL if the cluster needs them).
    #[arg(
        long,
        global = true,
        env = "KILLSWITCH_NATS",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats: String,
    /// Key-value bucket of the firm state; acknowledgements go to `<bucket>_ACKS`.
    #[arg(long, global = true, env = "KILLSWITCH_FIRM_BUCKET", default_value = DEFAULT_BUCKET)]
    pub bucket: String,
    /// Replicas when a bucket has to be created (3 in a 3-server cluster; 1 for a single server).
    #[arg(
        long,
        global = true,
        env = "KILLSWITCH_FIRM_REPLICAS",
        default_value_t = 3
    )]
    pub replicas: usize,
    /// Use only the servers in --nats, not those the cluster advertises (for hosts
    /// that can reach only some servers, e.g. through a firewall).
    #[arg(long, global = true)]
    pub only_listed_servers: bool,
}

impl NatsArgs {
    /// The acknowledgements bucket.
    pub fn acks_bucket(&self) -> String {
        format!("{}_ACKS", self.bucket)
    }

    fn servers(&self) -> Result<Vec<ServerAddr>, String> {
        let list: Vec<&str> = self
            .nats
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if list.is_empty() {
            return Err(
                "--nats is empty: give at least one server, e.g. nats://10.0.0.1:4222".into(),
            );
        }
        list.iter()
            .map(|s| {
                s.parse::<ServerAddr>()
                    .map_err(|e| format!("--nats: '{s}' is not a NATS server address: {e}"))
            })
            .collect()
    }

    /// Connects. `events` receives connection events (the relay resyncs on
    /// every reconnection); `wait` makes the first connection part of the
    /// call (commands), else it continues in the background (the relay,
    /// which must start and enforce its local rules with NATS down).
    pub async fn connect(
        &self,
        name: &str,
        events: Option<mpsc::UnboundedSender<Event>>,
        wait: bool,
    ) -> Result<Client, String> {
        let servers = self.servers()?;
        let mut opts = ConnectOptions::new()
            .name(name)
            .connection_timeout(REQUEST_TIMEOUT)
            // A dead server is noticed at once by its closed socket; a silent
            // partition within about two ping intervals.
            .ping_interval(Duration::from_secs(2))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempt| {
                Duration::from_millis((25u64 << attempt.min(5)).min(500))
            })
            .event_callback(move |ev| {
                let events = events.clone();
                async move {
                    if let Some(tx) = events {
                        let _ = tx.send(ev);
                    }
                }
            });
        if self.only_listed_servers {
            opts = opts.ignore_discovered_servers();
        }
        if !wait {
            opts = opts.retry_on_initial_connect();
        }
        opts.connect(servers)
            .await
            .map_err(|e| format!("cannot connect to NATS at {}: {e}", self.nats))
    }
}

/// The firm bucket and the acknowledgements bucket.
#[derive(Clone)]
pub struct Buckets {
    /// `firm`, `desk.*`, `host.*`.
    pub firm: Store,
    /// `ack.<host>.<engine>`.
    pub acks: Store,
}

/// Opens both buckets, creating a missing one when `create` (with
/// `--replicas` and the history the audit needs).
pub async fn buckets(client: &Client, args: &NatsArgs, create: bool) -> Result<Buckets, String> {
    let js = async_nats::jetstream::new(client.clone());
    let open = |name: String, history: i64| {
        let js = js.clone();
        async move {
            let got = tokio::time::timeout(REQUEST_TIMEOUT, js.get_key_value(name.clone())).await;
            match got {
                Ok(Ok(store)) => return Ok(store),
                Ok(Err(e)) if !create => {
                    return Err(format!(
                    "bucket {name}: {e}; create it once with `killswitch firm init --replicas N`"
                ))
                }
                Err(_) if !create => {
                    return Err(format!(
                        "bucket {name}: NATS did not answer within {REQUEST_TIMEOUT:?}"
                    ))
                }
                _ => {}
            }
            // The stream a key-value bucket is, built here rather than with
            // `create_key_value`: that call first reads the account info,
            // which the client cannot parse from a 2.9 server (Debian's).
            let cfg = stream::Config {
                name: format!("KV_{name}"),
                description: Some("killswitch firm-wide kill".into()),
                subjects: vec![format!("$KV.{name}.>")],
                max_messages_per_subject: history,
                num_replicas: args.replicas.max(1),
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                ..stream::Config::default()
            };
            let created = tokio::time::timeout(REQUEST_TIMEOUT * 5, js.get_or_create_stream(cfg))
                .await
                .map_err(|_| format!("creating bucket {name}: NATS did not answer"))?;
            if let Err(e) = created {
                return Err(format!(
                    "cannot create bucket {name} with {} replica(s): {e} (a single server needs --replicas 1)",
                    args.replicas
                ));
            }
            tokio::time::timeout(REQUEST_TIMEOUT, js.get_key_value(name.clone()))
                .await
                .map_err(|_| format!("bucket {name}: NATS did not answer"))?
                .map_err(|e| format!("bucket {name}: {e}"))
        }
    };
    Ok(Buckets {
        firm: open(args.bucket.clone(), HISTORY).await?,
        acks: open(args.acks_bucket(), 1).await?,
    })
}

/// Reads one entry into the relay's terms without waiting on anything: a
/// trip, a deletion, junk or a badly signed reset are final here. A reset
/// whose signature verifies still needs its history checked: it comes back
/// held (`recheck`), with `true`, and [`verify_reset_history`] finishes it.
pub fn classify(bucket: &str, trusted: &[String], e: &kv::Entry) -> (KeyEntry, bool) {
    let mut needs_history = false;
    let content = match e.operation {
        Operation::Delete | Operation::Purge => KeyContent::Deleted,
        Operation::Put => match FirmRecord::decode(&e.value) {
            Err(why) => KeyContent::Unreadable(why),
            Ok(r) if r.key != e.key => KeyContent::Unreadable(format!(
                "a record written for key '{}' stored under '{}'",
                r.key, e.key
            )),
            Ok(record) => {
                let honoured = match record.action {
                    Action::Trip => Ok(()),
                    Action::Reset => match record.verify_reset(bucket, trusted) {
                        Err(why) => Err(why),
                        Ok(()) => {
                            needs_history = true;
                            Err("checking the reset against the key's history".to_string())
                        }
                    },
                };
                KeyContent::Record { record, honoured }
            }
        },
    };
    (
        KeyEntry {
            revision: e.revision,
            content,
            recheck: needs_history,
        },
        needs_history,
    )
}

/// Finishes a reset [`classify`] left pending: honoured only if it replaced
/// exactly the revision it was signed for.
pub async fn verify_reset_history(store: &Store, mut entry: KeyEntry, e: &kv::Entry) -> KeyEntry {
    if let KeyContent::Record { record, honoured } = &mut entry.content {
        match replaced(store, e, record.revision_seen.unwrap_or(0)).await {
            Ok(()) => {
                *honoured = Ok(());
                entry.recheck = false;
            }
            Err(Check::Failed(why)) => {
                *honoured = Err(why);
                entry.recheck = false;
            }
            Err(Check::Unknown(why)) => *honoured = Err(why),
        }
    }
    entry
}

/// [`classify`] and, for a reset, [`verify_reset_history`]: what a command
/// (not the relay) uses.
pub async fn to_key_entry(
    store: &Store,
    bucket: &str,
    trusted: &[String],
    e: &kv::Entry,
) -> KeyEntry {
    match classify(bucket, trusted, e) {
        (entry, true) => verify_reset_history(store, entry, e).await,
        (entry, false) => entry,
    }
}

/// Why a reset's predecessor check did not pass.
enum Check {
    /// It replaced another revision than it was signed for.
    Failed(String),
    /// Could not tell now (no answer, or the history does not show the
    /// revision yet): try again later.
    Unknown(String),
}

/// `Ok` when the entry before `e` in its key's history is `revision_seen`.
/// A history read right after the entry arrived may not show it yet: read
/// again a few times before saying "unknown".
async fn replaced(store: &Store, e: &kv::Entry, revision_seen: u64) -> Result<(), Check> {
    let mut last = String::new();
    for attempt in 0..5u64 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10 * attempt)).await;
        }
        let revisions =
            match tokio::time::timeout(REQUEST_TIMEOUT, history_revisions(store, e)).await {
                Err(_) => {
                    last = "cannot read the key's history to check the reset (NATS did not answer)"
                        .into();
                    continue;
                }
                Ok(Err(x)) => {
                    last = format!("cannot read the key's history to check the reset: {x}");
                    continue;
                }
                Ok(Ok(r)) => r,
            };
        match revisions.iter().position(|r| *r == e.revision) {
            Some(i) if i > 0 && revisions[i - 1] == revision_seen => return Ok(()),
            Some(i) if i > 0 => {
                return Err(Check::Failed(format!(
                    "the reset was signed for revision {revision_seen} but replaced revision {} (a replayed reset)",
                    revisions[i - 1]
                )))
            }
            Some(_) => {
                return Err(Check::Failed(format!(
                    "the history does not show which revision the reset at {} replaced",
                    e.revision
                )))
            }
            None => {
                last = format!(
                    "the key's history does not show revision {} yet",
                    e.revision
                )
            }
        }
    }
    Err(Check::Unknown(last))
}

async fn history_revisions(store: &Store, e: &kv::Entry) -> Result<Vec<u64>, String> {
    let mut h = store.history(&e.key).await.map_err(|x| x.to_string())?;
    let mut revs = Vec::new();
    while let Some(item) = h.next().await {
        let item = item.map_err(|x| x.to_string())?;
        revs.push(item.revision);
        if item.revision >= e.revision {
            break;
        }
    }
    Ok(revs)
}
