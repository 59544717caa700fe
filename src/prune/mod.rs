//! `lifeboat prune`: delete the data no snapshot needs, while captures go on.
//!
//! Mark and sweep, ordered so that a crash at any point leaves a repository that `check`
//! passes and a rerun finishes:
//! 1. mark: every chunk the snapshots name; each pack is kept, rewritten (its unused
//!    share over `--max-unused`) or deleted (nothing in it used);
//! 2. write an intent naming the chunks that will go (captures that begin now store
//!    those again), then wait for the captures that began before it (their leases), and
//!    count the snapshots they saved;
//! 3. rewrite: the used chunks of the packs to rewrite go into new packs and an index
//!    file, made durable;
//! 4. replace every index file that names a pack going away by one without it;
//! 5. delete the packs; then the intent (and those of prunes that died).

pub mod intent;
pub mod lease;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::journal::{self, Operation, Subject};
use crate::repo::chunks::{IndexFile, Layout};
use crate::repo::index::IndexedPack;
use crate::repo::pack::PackId;
use crate::repo::{ChunkId, Object, RepoSpec, Repository, SnapshotId};
use crate::ui::{bytes, print_table, Outcome, Ui};

#[derive(Debug, Clone, clap::Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub repo: RepoSpec,
    /// Rewrite a pack when more than this share of it (percent) is unused.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub max_unused: u8,
    /// How long to wait for captures that began before this prune (at most).
    #[arg(long, default_value = "10min", value_parser = crate::time::parse_duration)]
    pub wait: Duration,
    /// Say what would be deleted and rewritten; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub dry_run: bool,
    pub snapshots: usize,
    pub packs_before: usize,
    pub packs_deleted: usize,
    pub packs_rewritten: usize,
    pub index_files_replaced: usize,
    pub chunks_dropped: usize,
    pub bytes_before: u64,
    pub bytes_freed: u64,
    pub bytes_rewritten: u64,
    /// Captures that began before the intent, waited for.
    pub captures_waited_for: usize,
    /// Packs that no index file named (left by captures that were killed), deleted.
    pub unindexed_packs_deleted: usize,
    /// Stale leases (not renewed) that were not waited for.
    pub stale_leases: Vec<String>,
    pub duration_s: f64,
}

impl Outcome for Summary {
    fn print(&self) {
        print_table(&[
            ("snapshots", self.snapshots.to_string()),
            (
                "packs",
                format!(
                    "{} in {}: {} deleted, {} rewritten",
                    bytes(self.bytes_before),
                    self.packs_before,
                    self.packs_deleted,
                    self.packs_rewritten
                ),
            ),
            (
                if self.dry_run { "would free" } else { "freed" },
                format!(
                    "{} ({} chunks dropped, {} rewritten)",
                    bytes(self.bytes_freed),
                    self.chunks_dropped,
                    bytes(self.bytes_rewritten)
                ),
            ),
            (
                "unindexed",
                format!(
                    "{} packs of killed captures {}",
                    self.unindexed_packs_deleted,
                    if self.dry_run {
                        "would be deleted"
                    } else {
                        "deleted"
                    }
                ),
            ),
            (
                "waited for",
                format!("{} captures", self.captures_waited_for),
            ),
            ("time", format!("{:.2} s", self.duration_s)),
        ]);
        for s in &self.stale_leases {
            crate::outln!("stale lease (not waited for): {s}");
        }
    }
}

/// What happens to each pack.
#[derive(Debug, Default)]
struct Plan {
    delete: Vec<PackId>,
    rewrite: Vec<PackId>,
    /// Chunks that will not survive: those of packs deleted or rewritten that no
    /// snapshot uses.
    drop: Vec<ChunkId>,
}

pub fn run(args: &PruneArgs, ui: &Ui) -> Result<Summary> {
    let repo = Repository::open(&args.repo)?;
    if repo.layout() != Layout::Packs {
        bail!("prune works on repositories of packs (format 2): `lifeboat migrate` first");
    }
    journal::recorded(
        &repo,
        Operation::Prune,
        || {
            prune(&repo, args, ui).map_err(|e| {
                crate::io::interrupt::explain(e, "prune", || {
                    "the repository is as sound as before (a prune's every step may stop); what \
                     it deleted no snapshot used, and the rest is there. Run prune again to finish"
                        .into()
                })
            })
        },
        |result| {
            (!args.dry_run).then(|| Subject {
                details: match result {
                    Ok(s) => serde_json::to_value(s).unwrap_or_default(),
                    Err(_) => serde_json::Value::Null,
                },
                ..Subject::default()
            })
        },
    )
}

fn prune(repo: &Repository, args: &PruneArgs, ui: &Ui) -> Result<Summary> {
    let start = Instant::now();
    let _lease = if args.dry_run {
        None
    } else {
        refuse_a_second_prune(repo)?;
        Some(lease::Lease::take(repo, "prune")?)
    };
    let mut summary = Summary {
        dry_run: args.dry_run,
        ..Summary::default()
    };
    let (seen, mut used) = mark(repo)?;
    let files = repo.index_files()?;
    let packs = packs_of(&files);
    summary.packs_before = packs.len();
    summary.bytes_before = packs.values().map(|p| p.len).sum();
    let plan = plan(&packs, &used, args.max_unused);
    // Packs no index file names now: those of a capture still running (waited for below,
    // after which its packs are named) or of one that died. A capture that begins later
    // writes only packs that are not in this list.
    let unindexed = repo.unindexed_packs()?;
    if args.dry_run {
        summary.unindexed_packs_deleted = unindexed.len();
        summary.snapshots = seen.len();
        account(&mut summary, &packs, &plan, &used);
        summary.duration_s = start.elapsed().as_secs_f64();
        return Ok(summary);
    }
    let intent_name = intent::write(
        repo,
        &intent::Intent::new(
            plan.delete
                .iter()
                .chain(&plan.rewrite)
                .map(|p| p.to_hex())
                .collect(),
            plan.drop.clone(),
        ),
    )?;
    pause_for_tests("intent");
    wait_for_captures(repo, args.wait, &mut summary, ui)?;
    // Snapshots saved meanwhile (by the captures waited for) keep what they use.
    crate::io::interrupt::check()?;
    let (seen_now, used_now) = mark(repo)?;
    summary.snapshots = seen_now.len();
    if seen_now.difference(&seen).next().is_some() {
        used.extend(used_now);
    }
    let plan = plan_within(&packs, &used, args.max_unused, &plan);
    account(&mut summary, &packs, &plan, &used);
    rewrite(repo, &packs, &plan, &used, &mut summary)?;
    pause_for_tests("rewritten");
    crate::io::interrupt::check()?;
    let gone: HashSet<PackId> = plan.delete.iter().chain(&plan.rewrite).copied().collect();
    summary.index_files_replaced = replace_index_files(repo, &files, &gone)?;
    pause_for_tests("indexed");
    delete_packs(repo, &gone)?;
    summary.unindexed_packs_deleted = delete_unindexed(repo, unindexed)?;
    pause_for_tests("deleted");
    for (name, _) in intent::list(repo)? {
        if name <= intent_name {
            let key = Object::Intent(name);
            repo.store()
                .delete(&key)
                .with_context(|| format!("remove intent {key}"))?;
        }
    }
    repo.store().flush()?;
    summary.duration_s = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// Tests stop a prune at a named step (`LIFEBOAT_PRUNE_PAUSE=step`: it says so on
/// stderr and sleeps) to kill it there.
fn pause_for_tests(step: &str) {
    if std::env::var("LIFEBOAT_PRUNE_PAUSE").is_ok_and(|s| s == step) {
        eprintln!("prune: paused after {step}");
        let _ = crate::io::interrupt::sleep(Duration::from_secs(3600));
    }
}

/// Two prunes at once would each trust the other's packs: refuse while another holds a
/// fresh lease.
fn refuse_a_second_prune(repo: &Repository) -> Result<()> {
    let now = chrono::Utc::now();
    if let Some((key, l)) = lease::list(repo)?
        .into_iter()
        .find(|(_, l)| l.kind == "prune" && !l.is_stale(now))
    {
        bail!(
            "another prune is running (host {}, pid {}, since {}; lease {key}): one at a time. \
             If that process is gone (on another host, or this one restarted), remove its lease \
             with `lifeboat locks --break {key}`; it goes stale by itself at {}",
            l.host,
            l.pid,
            crate::time::shown(&l.started),
            crate::time::shown(&l.expires)
        );
    }
    Ok(())
}

/// Every snapshot's id and every chunk they name. A manifest that cannot be read stops
/// the prune: what it names is unknown.
fn mark(repo: &Repository) -> Result<(HashSet<SnapshotId>, HashSet<ChunkId>)> {
    let mut seen = HashSet::new();
    let mut used = HashSet::new();
    for (id, s) in repo.snapshots()? {
        let s = s.with_context(|| {
            format!(
                "snapshot {} cannot be read: prune stops (what it uses is unknown)",
                id.short()
            )
        })?;
        used.extend(s.manifest.chunk_ids());
        seen.insert(id);
    }
    Ok((seen, used))
}

fn packs_of(files: &[IndexFile]) -> HashMap<PackId, IndexedPack> {
    let mut packs = HashMap::new();
    for (_, ps) in files {
        for p in ps {
            packs.entry(p.id).or_insert_with(|| p.clone());
        }
    }
    packs
}

/// Which packs to delete and rewrite.
fn plan(packs: &HashMap<PackId, IndexedPack>, used: &HashSet<ChunkId>, max_unused: u8) -> Plan {
    let mut plan = Plan::default();
    let mut ids: Vec<&PackId> = packs.keys().collect();
    ids.sort();
    for id in ids {
        let p = &packs[id];
        let total: u64 = p.entries.iter().map(|e| e.stored as u64).sum();
        let unused: u64 = p
            .entries
            .iter()
            .filter(|e| !used.contains(&e.id))
            .map(|e| e.stored as u64)
            .sum();
        if unused == 0 {
            continue;
        }
        if unused == total {
            plan.delete.push(*id);
        } else if unused * 100 > total * max_unused as u64 {
            plan.rewrite.push(*id);
        } else {
            continue;
        }
        plan.drop.extend(
            p.entries
                .iter()
                .filter(|e| !used.contains(&e.id))
                .map(|e| e.id),
        );
    }
    plan
}

/// The plan again with what is used now, never touching a pack the first one left.
fn plan_within(
    packs: &HashMap<PackId, IndexedPack>,
    used: &HashSet<ChunkId>,
    max_unused: u8,
    first: &Plan,
) -> Plan {
    let touched: HashSet<&PackId> = first.delete.iter().chain(&first.rewrite).collect();
    let subset: HashMap<PackId, IndexedPack> = packs
        .iter()
        .filter(|(id, _)| touched.contains(id))
        .map(|(id, p)| (*id, p.clone()))
        .collect();
    plan(&subset, used, max_unused)
}

fn account(
    s: &mut Summary,
    packs: &HashMap<PackId, IndexedPack>,
    plan: &Plan,
    used: &HashSet<ChunkId>,
) {
    s.packs_deleted = plan.delete.len();
    s.packs_rewritten = plan.rewrite.len();
    s.chunks_dropped = plan.drop.len();
    let freed_whole: u64 = plan.delete.iter().map(|p| packs[p].len).sum();
    let rewritten: u64 = plan
        .rewrite
        .iter()
        .flat_map(|p| &packs[p].entries)
        .filter(|e| used.contains(&e.id))
        .map(|e| e.stored as u64)
        .sum();
    let rewritten_len: u64 = plan.rewrite.iter().map(|p| packs[p].len).sum();
    s.bytes_rewritten = rewritten;
    s.bytes_freed = freed_whole + rewritten_len.saturating_sub(rewritten);
}

/// Wait until every capture that held a lease when the intent was written has ended
/// (its lease removed, or stale); stop, deleting nothing, after `wait`. Captures are
/// known by their host, process and start (a lease is renewed under a new name), never
/// by comparing clocks of different hosts: a capture whose lease appears only later
/// began after the intent existed, and honours it.
fn wait_for_captures(
    repo: &Repository,
    wait: Duration,
    summary: &mut Summary,
    ui: &Ui,
) -> Result<()> {
    let identity = |l: &lease::LeaseFile| format!("{} pid {} since {}", l.host, l.pid, l.started);
    let deadline = Instant::now() + wait;
    let until = crate::time::shown_at(deadline);
    let mut next_word = Instant::now();
    let mut waiting: Option<HashSet<String>> = None;
    loop {
        let now = chrono::Utc::now();
        let mut fresh = HashSet::new();
        for (key, l) in lease::list(repo)? {
            if l.kind != "capture" {
                continue;
            }
            if l.is_stale(now) {
                let s = format!("{key}: capture on {}", identity(&l));
                if !summary.stale_leases.contains(&s) {
                    log::warn!("stale lease, not waited for: {s}");
                    summary.stale_leases.push(s);
                }
                continue;
            }
            fresh.insert(identity(&l));
        }
        let set = waiting.get_or_insert_with(|| fresh.clone());
        summary.captures_waited_for = set.len();
        let running: Vec<&String> = set.iter().filter(|c| fresh.contains(*c)).collect();
        if running.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = running.iter().map(|s| s.as_str()).collect();
        if Instant::now() >= deadline {
            bail!(
                "captures that began before this prune are still running after {}: {}; nothing was deleted (run prune again later, or break a dead lease with `lifeboat locks --break`)",
                crate::time::exact(wait),
                names.join(", ")
            );
        }
        if Instant::now() >= next_word && !ui.quiet {
            next_word = Instant::now() + Duration::from_secs(30);
            eprintln!(
                "prune: waiting for {} capture(s) that began before it: {} (until {until} at most, \
                 --wait; a capture that died on another host: `lifeboat locks`, then \
                 `lifeboat locks --break NAME`; Ctrl-C stops, deleting nothing)",
                names.len(),
                names.join(", ")
            );
        }
        crate::io::interrupt::sleep(Duration::from_millis(500))?;
    }
}

/// The used chunks of the packs to rewrite, into new packs (and their index file).
fn rewrite(
    repo: &Repository,
    packs: &HashMap<PackId, IndexedPack>,
    plan: &Plan,
    used: &HashSet<ChunkId>,
    summary: &mut Summary,
) -> Result<()> {
    let keep: Vec<ChunkId> = plan
        .rewrite
        .iter()
        .flat_map(|p| &packs[p].entries)
        .filter(|e| used.contains(&e.id))
        .map(|e| e.id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if keep.is_empty() {
        return Ok(());
    }
    let ids = repo.in_storage_order(keep)?;
    let mut writer = repo.chunk_writer();
    repo.read_chunks(&ids, &mut |k, plain| {
        crate::io::interrupt::check()?;
        repo.put_chunk_with(&mut writer, &ids[k], &plain)
            .with_context(|| format!("rewrite chunk {}", ids[k]))
            .map(|_| ())
    })?;
    drop(writer);
    repo.flush()?;
    log::info!(
        "rewrote {} chunks ({})",
        ids.len(),
        bytes(summary.bytes_rewritten)
    );
    Ok(())
}

/// Replace each index file that names a pack in `gone` by one naming the rest; returns
/// how many were replaced. The new one is durable before the old one is deleted.
fn replace_index_files(
    repo: &Repository,
    files: &[IndexFile],
    gone: &HashSet<PackId>,
) -> Result<usize> {
    let mut replaced = 0;
    for (key, packs) in files {
        if !packs.iter().any(|p| gone.contains(&p.id)) {
            continue;
        }
        let rest: Vec<IndexedPack> = packs
            .iter()
            .filter(|p| !gone.contains(&p.id))
            .cloned()
            .collect();
        if !rest.is_empty() {
            repo.write_index(&rest)?;
        }
        let key = Object::Index(*key);
        repo.store()
            .delete(&key)
            .with_context(|| format!("delete index file {}", repo.store().location(&key)))?;
        replaced += 1;
    }
    repo.store().flush()?;
    Ok(replaced)
}

/// Delete the packs of `listed` (unindexed before the captures then running were waited
/// for) that no index file names still: the captures that wrote them are gone.
fn delete_unindexed(repo: &Repository, listed: Vec<PackId>) -> Result<usize> {
    if listed.is_empty() {
        return Ok(0);
    }
    let still: HashSet<PackId> = repo.reloaded().unindexed_packs()?.into_iter().collect();
    let gone: HashSet<PackId> = listed.into_iter().filter(|p| still.contains(p)).collect();
    delete_packs(repo, &gone)?;
    Ok(gone.len())
}

fn delete_packs(repo: &Repository, gone: &HashSet<PackId>) -> Result<()> {
    for p in gone {
        let key = Object::Pack(*p);
        repo.store()
            .delete(&key)
            .with_context(|| format!("delete pack {}", repo.store().location(&key)))?;
    }
    repo.store().flush()
}
