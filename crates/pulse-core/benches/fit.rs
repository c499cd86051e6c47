//! `cargo bench -p pulse-core --bench fit`: the time `fit_all` takes on 1 000 000 customers'
//! summaries (`FIT_BENCH_CUSTOMERS=N` for another count), drawn from BG/NBD and Gamma-Gamma
//! with CDNOW-like parameters over a 78-week window. Times are whole days (orders dated by
//! day, as in many exports) or, with `FIT_BENCH_MS=1`, milliseconds; the number of distinct
//! `(x, t_x, T)` rows that the aggregation leaves is printed with the time.

use std::time::Instant;

use pulse_core::fit::{fit_all, FitOptions};
use pulse_core::Summary;

#[path = "../tests/sim/rng.rs"]
mod rng;
use rng::Rng;

fn main() {
    let n: usize = std::env::var("FIT_BENCH_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let by_ms = std::env::var("FIT_BENCH_MS").is_ok_and(|v| v == "1");
    let (r, alpha, a, b) = (0.25, 4.4, 0.8, 2.4);
    let (p, q, v) = (6.0, 4.0, 1500.0);
    let window = 78.0 * 7.0; // days
    let round = |days: f64| if by_ms { days } else { days.floor() };
    let mut rng = Rng(7);
    let summaries: Vec<Summary> = (0..n)
        .map(|_| {
            let lambda = rng.gamma(r, alpha) / 7.0; // per day
            let drop = rng.beta(a, b);
            let nu = rng.gamma(q, v);
            let first = round(rng.next() * 12.0 * 7.0);
            let (mut t, mut last, mut x, mut spend) = (first, first, 0u32, 0.0);
            loop {
                t += -rng.next().ln() / lambda;
                if t >= window {
                    break;
                }
                let day = round(t);
                if day > last {
                    x += 1;
                    last = day;
                    spend += rng.gamma(p, nu).round();
                }
                if rng.next() < drop {
                    break;
                }
            }
            Summary {
                x: f64::from(x),
                t_x: (last - first) / 7.0,
                age: (window - first) / 7.0,
                mean_repeat_minor: if x > 0 { spend / f64::from(x) } else { 0.0 },
                orders: x + 1,
                net_minor: spend as i64 + 2000,
                silence_days: (window - last) as i64,
            }
        })
        .collect();
    let started = Instant::now();
    let report = fit_all(&summaries, &FitOptions::default()).expect("fit");
    let secs = started.elapsed().as_secs_f64();
    for f in [&report.bg_nbd, &report.mbg_nbd, &report.pareto_nbd]
        .into_iter()
        .chain(report.gamma_gamma.as_ref())
    {
        println!(
            "{:<11} LL {:.2} params {:?} evaluations {} converged {} |gradient| {:.2e}",
            f.model,
            f.log_likelihood,
            f.params
                .iter()
                .map(|(k, v)| format!("{k} {v:.4}"))
                .collect::<Vec<_>>(),
            f.convergence.evaluations,
            f.convergence.converged,
            f.convergence.gradient_norm
        );
    }
    println!(
        "fit_all: {n} customers ({} distinct (x, t_x, T) rows, times in {}) in {secs:.1} s",
        report.distinct_summaries,
        if by_ms { "ms" } else { "whole days" }
    );
}
