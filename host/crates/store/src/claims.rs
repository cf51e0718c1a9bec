//! The lease protocol by which trainers anywhere share a search stage's budget.
//!
//! A free trainer *claims*: it gets a requeued trial, or a *reservation* (a budget slot
//! and a fresh id) that it fills by asking its searcher outside any transaction, then
//! *commits* as a running trial. Every running trial and reservation carries its owner's
//! lease (store-clock seconds), which a heartbeat *renews*. Whoever next looks at the
//! stage *requeues* a trial whose lease expired (attempts count up when it starts again)
//! and drops such a reservation. A result is *finished* only by the owner that still
//! holds the trial, so each trial ends exactly once. The budget counts finished, running
//! and reserved trials, so it holds across workers.
//!
//! `Store`'s methods here are the protocol. LMDB runs each as one write transaction over
//! the stage record (its writer lock serialises them); PostgreSQL keeps the queue in
//! budget slots of its own, claimed row by row (`postgres/slots.rs`), so that no
//! record or lock is shared by every claim.

use super::{Backend, Owner, Reservation, StageRecord, StageState, Store, StoreError, TrialRecord, TrialStatus, Txn};

/// Who claims trials of a search stage, and on what terms.
#[derive(Debug, Clone, Copy)]
pub struct Claimant<'a> {
    pub stage: &'a str,
    pub me: &'a Owner,
    /// Seconds a claim is leased for, renewed by heartbeats.
    pub lease: f64,
    /// The stage's trial budget (`u64::MAX` when only time bounds it).
    pub limit: u64,
    /// How records name the trainer (`HOST pid P trainer T`).
    pub worker: &'a str,
}

impl Store {
    /// Records `finished` (a result of `who`'s, with its event-log line) and claims the
    /// next trial for `who`, in one transaction: a requeued trial, else a reservation,
    /// unless the budget is spent. Expired leases of others are requeued first.
    pub fn claim(
        &self,
        who: &Claimant,
        finished: Option<(&TrialRecord, &str)>,
    ) -> Result<(Finished, Claim), StoreError> {
        match &self.backend {
            Backend::Lmdb(_) => self.write(|t| {
                let mut stage = t.known_stage(who.stage)?;
                let kept = match finished {
                    Some((trial, event)) => t.finish_logged(&mut stage, trial, who.me, event)?,
                    None => Finished::Recorded,
                };
                t.requeue_expired(&mut stage, who.me)?;
                Ok((kept, t.claim(&mut stage, who.me, who.lease, who.limit, who.worker)?))
            }),
            Backend::Postgres(pg) => {
                if pg.due_for_requeue(who.stage) {
                    pg.requeue_expired(who.stage, who.me)?;
                }
                pg.claim(who, finished)
            }
        }
    }

    /// Records a result of `who`'s without claiming another.
    pub fn finish(&self, who: &Claimant, trial: &TrialRecord, event: &str) -> Result<Finished, StoreError> {
        match &self.backend {
            Backend::Lmdb(_) => self.write(|t| {
                let mut stage = t.known_stage(who.stage)?;
                t.finish_logged(&mut stage, trial, who.me, event)
            }),
            Backend::Postgres(pg) => pg.finish(who, trial, event),
        }
    }

    /// Records the proposal for `who`'s reservation `trial.id` as a running trial, with
    /// `event` in the log and `rejected` proposals counted. A reservation that expired
    /// meanwhile is taken afresh if the budget still allows.
    pub fn commit(
        &self,
        who: &Claimant,
        trial: TrialRecord,
        rejected: u64,
        event: &str,
    ) -> Result<Committed, StoreError> {
        match &self.backend {
            Backend::Lmdb(_) => self.write(|t| {
                let mut stage = t.known_stage(who.stage)?;
                stage.rejected_proposals += rejected;
                t.log(Some(who.stage), Some(trial.id), event)?;
                t.commit(&mut stage, trial.clone(), who.me, who.lease, who.limit, who.worker)
            }),
            Backend::Postgres(pg) => pg.commit(who, trial, rejected, event),
        }
    }

    /// Gives reservation `id` of `stage` back (the searcher had nothing more, or failed),
    /// counting `rejected` proposals.
    pub fn release(&self, stage: &str, id: u64, rejected: u64) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Lmdb(_) => self.write(|t| {
                let mut record = t.known_stage(stage)?;
                record.rejected_proposals += rejected;
                t.release(&mut record, id)
            }),
            Backend::Postgres(pg) => pg.release(stage, id, rejected),
        }
    }

    /// Puts a trial that `me` was interrupted on back at the head of the queue; nothing
    /// when its lease was lost (then it is queued or running elsewhere already).
    pub fn give_back(&self, stage: &str, trial: &TrialRecord, me: &Owner) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Lmdb(_) => self.write(|t| {
                let mut record = t.known_stage(stage)?;
                t.give_back(&mut record, trial.clone(), me)
            }),
            Backend::Postgres(pg) => pg.requeue(stage, trial, me, "interrupted: back in the queue").map(drop),
        }
    }

    /// Requeues `stage`'s running trials whose owner lost them (`lost`), and drops such
    /// reservations; the ids requeued.
    pub fn requeue_expired(&self, stage: &str, me: &Owner) -> Result<Vec<u64>, StoreError> {
        match &self.backend {
            Backend::Lmdb(_) => self.write(|t| {
                let mut record = t.known_stage(stage)?;
                t.requeue_expired(&mut record, me)
            }),
            Backend::Postgres(pg) => pg.requeue_expired(stage, me),
        }
    }

    /// Extends `me`'s leases on the trials and reservations `ids` by `lease` seconds;
    /// returns those it no longer holds.
    pub fn renew(&self, ids: &[u64], me: &Owner, lease: f64) -> Result<Vec<u64>, StoreError> {
        match &self.backend {
            Backend::Lmdb(_) => self.write(|t| t.renew(ids, me, lease)),
            Backend::Postgres(pg) => pg.renew(ids, me, lease),
        }
    }

    /// The trials of `stage` being trained now (on PostgreSQL also those just finished that
    /// `finished_since` cannot show yet), for a search's check against repeats.
    pub fn running(&self, stage: &str) -> Result<Vec<TrialRecord>, StoreError> {
        match &self.backend {
            Backend::Lmdb(_) => self.read(|v| match v.stage(stage)? {
                Some(record) => record.in_flight.iter().map(|&id| v.trial(id)).collect(),
                None => Ok(Vec::new()),
            }),
            Backend::Postgres(pg) => pg.running(stage),
        }
    }

    /// Brings `stage`'s spent time up to `seconds`; processes working at once measure the
    /// same wall time, so the larger count wins.
    pub fn record_time(&self, stage: &str, seconds: f64) -> Result<(), StoreError> {
        self.write(|t| {
            let mut record = t.known_stage(stage)?;
            if seconds > record.spent_seconds {
                record.spent_seconds = seconds;
                t.put_stage(&record)?;
            }
            Ok(())
        })
    }

    /// Gives every trial of `stage` its slot where a backend keeps search queues apart
    /// (PostgreSQL) and the run was written by an msh from before them; nothing otherwise.
    pub fn align_queue(&self, stage: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Lmdb(_) => Ok(()),
            Backend::Postgres(pg) => pg.align_queue(stage, || self.trials()),
        }
    }
}

/// What a free trainer gets from `Txn::claim`.
#[derive(Debug)]
pub enum Claim {
    /// A requeued trial, now running under the claimant's lease.
    Trial(TrialRecord),
    /// A budget slot: propose a trial with this id, then `Txn::commit` it.
    Reserved(u64),
    /// The budget is used up (counting what others run and reserve).
    Spent,
}

/// What `Txn::commit` made of a proposal.
#[derive(Debug)]
pub enum Committed {
    Running(TrialRecord),
    /// The reservation had expired and others used up the budget meanwhile.
    Spent,
}

/// What `Txn::claim_stage` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageClaim {
    /// The stage is this process's to run now.
    Taken,
    /// Another process runs it, under a live lease.
    Held,
    /// It ran to its end.
    Done,
}

/// What `Txn::finish` did with a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Recorded,
    /// The lease had expired and the trial was requeued: this result is dropped, the
    /// trial ends where it runs now.
    LeaseLost,
}

impl Owner {
    /// This process's owner tag (its lease is set when it claims).
    pub fn this_process(session: u64) -> Self {
        Self { pid: std::process::id(), session, host: host_hash(), lease_until: 0.0 }
    }

    pub fn same_process(&self, other: &Owner) -> bool {
        (self.pid, self.session, self.host) == (other.pid, other.session, other.host)
    }

    /// Whether this recorded owner has lost its trial, as `me` sees it at store-clock
    /// `now`: its lease expired, or it is a process of `me`'s machine that has exited.
    pub fn expired(&self, now: f64, me: &Owner) -> bool {
        self.loss(now, me).is_some()
    }

    /// Why the owner has lost its trial (see `expired`).
    fn loss(&self, now: f64, me: &Owner) -> Option<&'static str> {
        if self.same_process(me) {
            None
        } else if self.lease_until < now {
            Some("its lease expired")
        } else if self.host == me.host && !process_alive(self.pid) {
            Some("its process exited")
        } else {
            None
        }
    }

    fn leased(&self, now: f64, seconds: f64) -> Self {
        Self { lease_until: now + seconds, ..*self }
    }
}

/// Why a running trial's owner has lost it, as `me` sees it at store-clock `now`, as the
/// event log says it; `None` while the owner holds it.
pub fn lost(trial: &TrialRecord, now: f64, me: &Owner) -> Option<String> {
    let reason = match &trial.owner {
        Some(owner) => owner.loss(now, me)?,
        None => "it had no owner",
    };
    let who = trial.worker.as_deref().unwrap_or("its trainer");
    Some(format!("requeued: {who} stopped ({reason}) before it finished attempt {}", trial.attempts))
}

/// This machine's name, for `HOST pid P` tags: `MSH_HOST`, else the host name.
pub fn host_name() -> String {
    std::env::var("MSH_HOST")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn host_hash() -> u64 {
    host_name().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Whether a process of this machine is running. Without `/proc` only leases tell.
fn process_alive(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

impl Txn<'_> {
    /// Claims a stage that runs once per run (ensemble, retrain, distill, export): unless
    /// it is done, or another process holds it under a live lease, it becomes `me`'s,
    /// leased for `lease` seconds (a dead or silent owner's stage is taken over).
    pub fn claim_stage(&mut self, name: &str, kind: &str, me: &Owner, lease: f64) -> Result<StageClaim, StoreError> {
        let now = self.clock();
        let mut record = self.stage(name)?.unwrap_or_else(|| StageRecord::new(name, kind));
        match (record.state, &record.owner) {
            (StageState::Done, _) => return Ok(StageClaim::Done),
            (StageState::Running, Some(owner)) if !owner.same_process(me) => {
                let Some(why) = owner.loss(now, me) else { return Ok(StageClaim::Held) };
                self.log(Some(name), None, format!("taken over from pid {}: {why}", owner.pid))?;
            }
            _ => {}
        }
        record.state = StageState::Running;
        record.started = Some(super::now());
        record.owner = Some(Owner { lease_until: now + lease, ..*me });
        self.put_stage(&record)?;
        Ok(StageClaim::Taken)
    }

    /// Extends `me`'s leases on the stages `names` (those it still holds).
    pub fn renew_stages(&mut self, names: &[String], me: &Owner, lease: f64) -> Result<(), StoreError> {
        let now = self.clock();
        for name in names {
            let Some(mut record) = self.stage(name)? else { continue };
            if let Some(owner) = record.owner.as_mut().filter(|o| o.same_process(me)) {
                owner.lease_until = now + lease;
                self.put_stage(&record)?;
            }
        }
        Ok(())
    }

    /// Requeues `stage`'s running trials whose owner's lease expired, and drops such
    /// reservations; the ids requeued.
    fn requeue_expired(&mut self, stage: &mut StageRecord, me: &Owner) -> Result<Vec<u64>, StoreError> {
        let now = self.clock();
        let (kept, dropped): (Vec<Reservation>, Vec<Reservation>) =
            stage.reserved.iter().partition(|r| !r.owner.expired(now, me));
        stage.reserved = kept;
        if !dropped.is_empty() {
            self.put_stage(stage)?;
        }
        for reservation in dropped {
            let message =
                format!("reservation dropped: pid {}'s lease expired while it proposed", reservation.owner.pid);
            self.log(Some(&stage.name), Some(reservation.id), message)?;
        }
        let mut requeued = Vec::new();
        for id in stage.in_flight.clone() {
            let trial = self.trial(id)?;
            if trial.status != TrialStatus::Running {
                stage.in_flight.retain(|i| *i != id);
                continue;
            }
            if let Some(why) = lost(&trial, now, me) {
                self.requeue(stage, trial, &why)?;
                requeued.push(id);
            }
        }
        Ok(requeued)
    }

    /// Puts a running trial back at the head of the stage's queue, saying `why`.
    fn requeue(&mut self, stage: &mut StageRecord, mut trial: TrialRecord, why: &str) -> Result<(), StoreError> {
        trial.status = TrialStatus::Pending;
        trial.owner = None;
        stage.running = stage.running.saturating_sub(1);
        stage.in_flight.retain(|id| *id != trial.id);
        if !stage.pending.contains(&trial.id) {
            stage.pending.insert(0, trial.id);
        }
        self.put_trial(&trial)?;
        self.put_stage(stage)?;
        self.log(Some(&stage.name), Some(trial.id), why)
    }

    /// The next trial for a free trainer `me` of `stage` (`worker` names it in the
    /// record): a requeued trial, else a reservation, unless finished, running and
    /// reserved trials already reach `limit`.
    fn claim(
        &mut self,
        stage: &mut StageRecord,
        me: &Owner,
        lease: f64,
        limit: u64,
        worker: &str,
    ) -> Result<Claim, StoreError> {
        let owner = me.leased(self.clock(), lease);
        if !stage.pending.is_empty() {
            let trial = self.trial(stage.pending.remove(0))?;
            return self.start(stage, trial, owner, worker).map(Claim::Trial);
        }
        if stage.finished_trials + stage.running + stage.reserved.len() as u64 >= limit {
            return Ok(Claim::Spent);
        }
        let id = self.next_trial_id()?;
        stage.reserved.push(Reservation { id, owner });
        self.put_stage(stage)?;
        Ok(Claim::Reserved(id))
    }

    /// Records the proposal for reservation `trial.id` as a running trial. A reservation
    /// that expired meanwhile is taken afresh if the budget still allows.
    fn commit(
        &mut self,
        stage: &mut StageRecord,
        trial: TrialRecord,
        me: &Owner,
        lease: f64,
        limit: u64,
        worker: &str,
    ) -> Result<Committed, StoreError> {
        match stage.reserved.iter().position(|r| r.id == trial.id && r.owner.same_process(me)) {
            Some(at) => {
                stage.reserved.remove(at);
            }
            None if stage.finished_trials + stage.running + stage.reserved.len() as u64 >= limit => {
                self.put_stage(stage)?;
                return Ok(Committed::Spent);
            }
            None => {}
        }
        let owner = me.leased(self.clock(), lease);
        self.start(stage, trial, owner, worker).map(Committed::Running)
    }

    /// Gives a reservation back (the searcher had nothing more, or failed).
    fn release(&mut self, stage: &mut StageRecord, id: u64) -> Result<(), StoreError> {
        stage.reserved.retain(|r| r.id != id);
        self.put_stage(stage)
    }

    fn start(
        &mut self,
        stage: &mut StageRecord,
        mut trial: TrialRecord,
        owner: Owner,
        worker: &str,
    ) -> Result<TrialRecord, StoreError> {
        trial.status = TrialStatus::Running;
        trial.owner = Some(owner);
        trial.worker = Some(worker.into());
        trial.attempts += 1;
        trial.started = Some(self.clock());
        stage.running += 1;
        stage.in_flight.push(trial.id);
        self.put_trial(&trial)?;
        self.put_stage(stage)?;
        Ok(trial)
    }

    /// Whether `me` still holds trial `id` (it runs under `me`'s lease).
    fn holds(&self, id: u64, me: &Owner) -> Result<bool, StoreError> {
        let stored = self.trial(id)?;
        Ok(stored.status == TrialStatus::Running && stored.owner.is_some_and(|o| o.same_process(me)))
    }

    /// Puts a trial that `me` was interrupted on back at the head of the queue; nothing
    /// when its lease was lost (then it is queued or running elsewhere already).
    fn give_back(&mut self, stage: &mut StageRecord, trial: TrialRecord, me: &Owner) -> Result<(), StoreError> {
        if !self.holds(trial.id, me)? {
            return Ok(());
        }
        self.requeue(stage, trial, "interrupted: back in the queue")
    }

    /// `finish`, with `event` in the log when the result is kept.
    fn finish_logged(
        &mut self,
        stage: &mut StageRecord,
        trial: &TrialRecord,
        me: &Owner,
        event: &str,
    ) -> Result<Finished, StoreError> {
        let kept = self.finish(stage, trial, me)?;
        if kept == Finished::Recorded {
            self.log(Some(&stage.name), Some(trial.id), event)?;
        }
        Ok(kept)
    }

    /// Records `trial`'s result if `me` still holds it.
    fn finish(&mut self, stage: &mut StageRecord, trial: &TrialRecord, me: &Owner) -> Result<Finished, StoreError> {
        if !self.holds(trial.id, me)? {
            let message = "result dropped: its lease expired and it was requeued before it finished";
            self.log(Some(&stage.name), Some(trial.id), message)?;
            return Ok(Finished::LeaseLost);
        }
        stage.running = stage.running.saturating_sub(1);
        stage.in_flight.retain(|id| *id != trial.id);
        stage.finished_trials += 1;
        self.put_trial(&TrialRecord { owner: None, ..trial.clone() })?;
        self.put_stage(stage)?;
        Ok(Finished::Recorded)
    }

    /// Extends `me`'s leases on the trials and reservations `ids` by `lease` seconds;
    /// returns those it no longer holds.
    fn renew(&mut self, ids: &[u64], me: &Owner, lease: f64) -> Result<Vec<u64>, StoreError> {
        let owner = me.leased(self.clock(), lease);
        let mut held = Vec::new();
        for mut stage in self.stages()? {
            let mut changed = false;
            for reservation in &mut stage.reserved {
                if ids.contains(&reservation.id) && reservation.owner.same_process(me) {
                    reservation.owner = owner;
                    held.push(reservation.id);
                    changed = true;
                }
            }
            if changed {
                self.put_stage(&stage)?;
            }
        }
        for &id in ids {
            if held.contains(&id) {
                continue;
            }
            let Ok(mut trial) = self.trial(id) else { continue };
            if trial.status == TrialStatus::Running && trial.owner.is_some_and(|o| o.same_process(me)) {
                trial.owner = Some(owner);
                self.put_trial(&trial)?;
                held.push(id);
            }
        }
        Ok(ids.iter().copied().filter(|id| !held.contains(id)).collect())
    }
}
