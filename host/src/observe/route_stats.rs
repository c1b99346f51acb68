//! Running totals of each route's requests and server errors, for the admin
//! status page's rate chart. A route's [`RouteStats`] is found by name when
//! a snapshot is built and carried by its route entry, so a request counts
//! itself with two relaxed atomic adds: no lock and no map lookup on the
//! request path, and a reload that keeps a route keeps its totals. It also
//! keeps the route's metric series, for the same reason.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One route's totals since the gateway started.
#[derive(Debug)]
pub struct RouteStats {
    name: Arc<str>,
    requests: AtomicU64,
    errors: AtomicU64,
    /// The route's metric series, once found.
    pub series: super::metrics::RouteSeries,
}

impl RouteStats {
    pub(super) fn new(name: Arc<str>) -> Self {
        Self {
            name,
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            series: super::metrics::RouteSeries::default(),
        }
    }

    /// The route's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Counts a finished request answered with `status` (a 5xx is an error).
    pub fn count(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if (500..=599).contains(&status) {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests finished so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests answered with a 5xx so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// Every route's totals, by name: what snapshot builds take their routes'
/// [`RouteStats`] from.
#[derive(Debug, Default)]
pub struct RouteTotals {
    routes: Mutex<HashMap<Arc<str>, Arc<RouteStats>>>,
}

impl RouteTotals {
    /// The totals of the route named `name`, created at zero when it has none.
    pub fn get_or_create(&self, name: &str) -> Arc<RouteStats> {
        let mut routes = self.lock();
        if let Some(stats) = routes.get(name) {
            return stats.clone();
        }
        let stats = Arc::new(RouteStats::new(name.into()));
        routes.insert(stats.name.clone(), stats.clone());
        stats
    }

    /// Forgets the routes not named in `names` (a reload removed them).
    pub fn retain<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let keep: std::collections::HashSet<&str> = names.into_iter().collect();
        self.lock().retain(|name, _| keep.contains(&**name));
    }

    /// Every route's totals, by name.
    pub fn all(&self) -> Vec<Arc<RouteStats>> {
        let mut all: Vec<Arc<RouteStats>> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<RouteStats>>> {
        // Plain data: consistent even if a holder panicked.
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_keeps_its_totals_across_lookups_until_it_is_removed() {
        let totals = RouteTotals::default();
        let users = totals.get_or_create("users");
        users.count(200);
        users.count(503);
        users.count(404);
        let again = totals.get_or_create("users");
        assert!(Arc::ptr_eq(&users, &again));
        assert_eq!((again.requests(), again.errors()), (3, 1));
        totals.get_or_create("orders");
        totals.retain(["orders"]);
        let names: Vec<String> = totals.all().iter().map(|s| s.name().to_string()).collect();
        assert_eq!(names, ["orders"]);
        assert_eq!(totals.get_or_create("users").requests(), 0);
    }
}
