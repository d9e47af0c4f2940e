//! The metrics server's renderings of `/metrics`, on the `zring-admin` thread.
//!
//! Why keep one: rendering is the costly part of a scrape (it merges every series of every
//! core and formats them: 10,000 `istio_tcp_*` series render to 9 MB in 100-150 ms in a
//! release build on a busy 2-core machine, ~0.6 s in a debug build; printed by
//! `admin::tests::flood::rendering_10k_series_once_for_a_crowd`), and the admin thread renders
//! one scrape at a time, so a flood of completed scrapes would keep readiness probes and other
//! scrapers waiting behind a queue of renderings. While the metrics server is crowded (at least [`CROWDED`]
//! connections held), a scrape is answered with the last rendering if it is younger than
//! [`REUSE_FOR`]; the rendering is shared, not copied. An uncrowded server (one or two
//! Prometheus servers) always renders afresh, so what a scrape shows follows what just
//! happened. Counted in `zring_admin_scrapes_total{rendering}`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How old a rendering a crowded server may answer with (from the end of its rendering).
pub const REUSE_FOR: Duration = Duration::from_secs(1);
/// Connections held by the metrics server from which it is crowded.
pub const CROWDED: usize = 8;

/// Whether a scrape's answer was rendered for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rendering {
    Fresh,
    Reused,
}

impl Rendering {
    pub const ALL: [Rendering; 2] = [Rendering::Fresh, Rendering::Reused];

    pub fn name(self) -> &'static str {
        match self {
            Rendering::Fresh => "fresh",
            Rendering::Reused => "reused",
        }
    }
}

/// The last rendering and when it was made.
#[derive(Debug, Default)]
pub struct Scrapes {
    last: Mutex<Option<(Instant, Bytes)>>,
}

impl Scrapes {
    /// The answer to a scrape at `now`: the last rendering when `held` connections crowd the
    /// server and it is recent enough, else `render()`'s (kept for the next ones).
    pub fn get(
        &self,
        held: usize,
        now: Instant,
        render: impl FnOnce() -> Bytes,
    ) -> (Bytes, Rendering) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if held >= CROWDED
            && let Some((at, body)) = &*last
            && now.saturating_duration_since(*at) < REUSE_FOR
        {
            return (body.clone(), Rendering::Reused);
        }
        // Its age counts from when it was finished: a rendering slower than REUSE_FOR (a
        // debug build, a busy machine) is still shared with the scrapes that queued behind it.
        let took = Instant::now();
        let body = render();
        *last = Some((now + took.elapsed(), body.clone()));
        (body, Rendering::Fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_only_while_crowded_and_recent() {
        let s = Scrapes::default();
        let t0 = Instant::now();
        let mut n = 0;
        let mut get = |held, secs_ms: u64| {
            s.get(held, t0 + Duration::from_millis(secs_ms), || {
                n += 1;
                Bytes::from(format!("rendering {n}"))
            })
        };
        assert_eq!(
            get(CROWDED, 0),
            (Bytes::from("rendering 1"), Rendering::Fresh)
        );
        assert_eq!(
            get(CROWDED, 500),
            (Bytes::from("rendering 1"), Rendering::Reused)
        );
        // Uncrowded: always fresh.
        assert_eq!(get(1, 600), (Bytes::from("rendering 2"), Rendering::Fresh));
        assert_eq!(
            get(CROWDED - 1, 601),
            (Bytes::from("rendering 3"), Rendering::Fresh)
        );
        // Crowded, but the last is too old (1 s after it was made, at 601).
        assert_eq!(
            get(CROWDED + 5, 1700),
            (Bytes::from("rendering 4"), Rendering::Fresh)
        );
        assert_eq!(
            get(CROWDED + 5, 1701),
            (Bytes::from("rendering 4"), Rendering::Reused)
        );
    }
}
