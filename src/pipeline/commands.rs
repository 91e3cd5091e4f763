//! The loop's commands (category, stock list, filter, reload, the fleet's announcement) and the
//! catalog thread's events (progress, a new catalog to swap in, a failure to report).

use std::time::{Instant, SystemTime};

use super::frames::{configured_category, Loop};
use super::{ms, unix_s, Notice, Received};
use crate::publish::payload::{Command, CommandError, FleetCatalog};
use crate::update::{Event, Job, NewCatalog};

impl<'a> Loop<'a> {
    pub(super) fn handle_commands(&mut self, supervisor: &mut dyn FnMut(Notice)) {
        for Received { suffix, command } in self.publisher.commands() {
            let result = match command {
                Ok(Command::SetCategory(name)) => self.set_category(&name),
                Ok(Command::Reload) => self.reload(&suffix, supervisor),
                Ok(Command::Unavailable(ids)) => {
                    let n = ids.len();
                    self.engine.stock.unavailable = ids.into_iter().collect();
                    self.restocked();
                    log::info!("{n} products marked unavailable");
                    Ok(())
                }
                Ok(Command::SetFilter(filter)) => {
                    let said = format!("{filter:?}");
                    self.engine.set_filter(filter).map(|()| {
                        log::info!("filter set to {said}");
                        self.restocked();
                    })
                }
                Ok(Command::Fleet(f)) => self.fleet(f, &suffix, false, supervisor),
                Err(e) => Err(e),
            };
            if let Err(error) = result {
                self.refuse(&suffix, error);
            }
        }
    }

    /// Says on `<prefix>/error` what was refused, and why.
    pub(super) fn refuse(&self, topic: &str, error: String) {
        log::warn!("{topic}: refused: {error}");
        let e = CommandError { topic: topic.to_string(), error, ts: unix_s(SystemTime::now()) };
        self.publisher.publish("error", serde_json::to_vec(&e).unwrap_or_default());
    }

    pub(super) fn set_category(&mut self, name: &str) -> Result<(), String> {
        let block = self.engine.cache.find_category(name)?.clone();
        log::info!("category set to {}", block.path);
        self.category = block;
        self.publish_category_state();
        // Rank the scene we have for the new category at once: no new frame needed.
        self.publish_recommendations(Instant::now());
        Ok(())
    }

    /// The stock or the filter changed: the state says so, and the screen drops what left at once.
    pub(super) fn restocked(&mut self) {
        self.engine.restock();
        self.publish_catalog_state();
        self.publish_recommendations(Instant::now());
    }

    /// A reload (SIGHUP, `catalog/reload`): the fleet's last catalog fetched again where the
    /// mirror follows a fleet, else a rebuild from the catalog CSV.
    pub(super) fn reload(&mut self, topic: &str, supervisor: &mut dyn FnMut(Notice)) -> Result<(), String> {
        let Some(updates) = &self.engine.updates else {
            return Err("this lookd cannot reload its catalog".into());
        };
        if let (Some(_), Some(f)) = (&updates.fleet_topic, self.last_fleet.clone()) {
            // Fetched again even when it is the catalog served: a reload is how a store repairs
            // a mirror (docs/fleet.md).
            return self.fleet(f, topic, true, supervisor);
        }
        updates.submit(Job::Rebuild { why: topic.to_string() }, topic);
        supervisor(Notice::Reloading);
        Ok(())
    }

    /// A fleet announcement: fetched unless it is the catalog served already (a re-delivered
    /// message does nothing), or always when `again` (a reload).
    pub(super) fn fleet(
        &mut self,
        f: FleetCatalog,
        topic: &str,
        again: bool,
        supervisor: &mut dyn FnMut(Notice),
    ) -> Result<(), String> {
        let Some(updates) = &self.engine.updates else {
            return Err("this lookd follows no fleet".into());
        };
        self.last_fleet = Some(f.clone());
        let same_model =
            f.model.as_ref().is_none_or(|m| self.engine.model_archive.as_ref() == Some(&m.sha256));
        if !again && f.sha256 == self.engine.identity.sha256 && same_model {
            log::info!("fleet catalog {}: already serving it", f.version);
            return Ok(());
        }
        updates.submit(Job::Fetch(f), topic);
        supervisor(Notice::Reloading);
        Ok(())
    }

    pub(super) fn handle_updates(&mut self, supervisor: &mut dyn FnMut(Notice)) {
        let Some(updates) = &self.engine.updates else { return };
        let signalled = updates.take_reload_signal();
        let events = updates.events();
        if signalled {
            if let Err(e) = self.reload("SIGHUP", supervisor) {
                self.refuse("SIGHUP", e);
            }
        }
        for event in events {
            match event {
                Event::Progress(p) => {
                    self.building = Some(p);
                    self.publish_catalog_state();
                }
                Event::Ready(new) => {
                    self.swap(*new);
                    supervisor(Notice::Reloaded);
                }
                Event::Failed { topic, error } => {
                    self.building = None;
                    self.publish_catalog_state();
                    self.refuse(&topic, error);
                    supervisor(Notice::Reloaded);
                }
            }
        }
    }

    /// Puts a new catalog in, between two frames, with its model when it brings one. The old
    /// cache is dropped here (its map goes); the category, the stock and the filter carry over
    /// where the new catalog allows.
    pub(super) fn swap(&mut self, new: NewCatalog) {
        let t = Instant::now();
        let NewCatalog { cache, identity, how, model } = new;
        if let Some(m) = model {
            self.engine.folder = m.folder;
            self.engine.scene = m.scene;
            self.engine.model_archive = Some(m.archive_sha256);
            // The last scene was embedded by the old model: its embedding means nothing to the
            // new catalog. The next frame counts as changed and is embedded by the new one.
            self.last_scene = None;
            self.last_thumb = Vec::new();
            self.changed_since = None;
            self.engine.pixels = Vec::new();
        }
        self.engine.cache = cache;
        self.engine.identity = identity;
        self.building = None;
        let mut problems = Vec::new();
        if let Err(e) = crate::stock::check_filter(&self.engine.stock.filter, self.engine.cache.products()) {
            problems.push(format!("the filter was dropped: {e}"));
            self.engine.stock.filter.clear();
        }
        self.engine.restock();
        let cache = &self.engine.cache;
        match cache.find_category(&self.category.path) {
            Ok(same) => self.category = same.clone(),
            Err(_) => {
                if let Some(c) = configured_category(cache, &self.opts.category) {
                    problems.push(format!(
                        "category {:?} is not in the new catalog: showing {}",
                        self.category.path, c.path
                    ));
                    self.category = c;
                }
            }
        }
        if let Some(k) = &self.engine.kiosk {
            let table = crate::kiosk::ProductTable::new(self.engine.cache.products(), &k.images);
            *k.table.write().unwrap_or_else(|e| e.into_inner()) = table;
        }
        self.swap_ms = ms(t.elapsed());
        log::info!(
            "catalog swapped in ({how}): version {}, {} products, in {:.2} ms",
            self.engine.identity.version,
            self.engine.cache.len(),
            self.swap_ms
        );
        for p in problems {
            self.refuse("catalog", p);
        }
        self.publish_category_state();
        self.publish_catalog_state();
        self.publish_recommendations(Instant::now());
    }
}
