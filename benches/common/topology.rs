//! The topology table both broker benches print: consume throughput of raw
//! client and wharf side by side for each way the broker keeps the queue
//! (RabbitMQ classic or quorum, JetStream R1 or R3), wharf/raw for each,
//! and each variant against its base, for raw and for wharf.

use super::measured::{Measured, median as median_of, spread};
use super::report::{Ratio, print_ratios, ratio, thousands};

/// One layout's row: its label and the runs of both consumers (`None`
/// when a consumer did not run).
pub struct Row<'a> {
    pub label: &'static str,
    pub raw: Option<&'a [Measured]>,
    pub wharf: Option<&'a [Measured]>,
}

impl Row<'_> {
    fn ran(&self) -> bool {
        self.raw.is_some() || self.wharf.is_some()
    }

    /// Median pre-fill rate over the runs of both consumers (NaN if none
    /// had one).
    fn fill_rate(&self) -> f64 {
        let rates: Vec<f64> = [self.raw, self.wharf]
            .into_iter()
            .flatten()
            .flatten()
            .map(Measured::fill_rate)
            .filter(|r| r.is_finite())
            .collect();
        if rates.is_empty() {
            f64::NAN
        } else {
            median_of(rates)
        }
    }
}

/// A variant compared with its base: `label` names them ("quorum /
/// classic, shared node"), `variant` and `base` index the rows.
pub struct Against {
    pub label: &'static str,
    pub variant: usize,
    pub base: usize,
}

/// Median of `metric` over `runs` (NaN when they did not run).
fn median(runs: Option<&[Measured]>, metric: fn(&Measured) -> f64) -> f64 {
    runs.map_or(f64::NAN, |runs| spread(runs, metric).0)
}

/// `median(min-max)` of the runs' throughput, or `-`.
fn rate_spread(runs: Option<&[Measured]>) -> String {
    match runs {
        Some(runs) => {
            let (rate, low, high) = spread(runs, Measured::rate);
            format!("{} ({}-{})", thousands(rate), thousands(low), thousands(high))
        }
        None => "-".to_owned(),
    }
}

fn optional(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "-".to_owned()
    }
}

/// Prints `title`, the rows that ran, then the ratios; nothing if no row
/// ran. `what` heads the rows' labels ("queue", "stream"); `broker` names
/// the broker's processes in the column of their CPU time per message.
pub fn print(title: &str, what: &str, broker: &str, rows: &[Row<'_>], against: &[Against]) {
    if !rows.iter().any(Row::ran) {
        return;
    }
    println!();
    println!("{title}");
    println!(
        "  {:<36} {:>27} {:>27} {:>9} {:>15} {:>15} {:>10}",
        what,
        "raw msg/s (min-max)",
        "wharf msg/s (min-max)",
        "wharf/raw",
        "process µs r/w",
        format!("{broker} µs r/w"),
        "fill msg/s"
    );
    for row in rows.iter().filter(|r| r.ran()) {
        println!(
            "  {:<36} {:>27} {:>27} {:>9} {:>15} {:>15} {:>10}",
            row.label,
            rate_spread(row.raw),
            rate_spread(row.wharf),
            optional(
                median(row.wharf, Measured::rate) / median(row.raw, Measured::rate),
                2
            ),
            format!(
                "{} / {}",
                optional(median(row.raw, Measured::cpu_per), 2),
                optional(median(row.wharf, Measured::cpu_per), 2)
            ),
            format!(
                "{} / {}",
                optional(median(row.raw, Measured::broker_per), 1),
                optional(median(row.wharf, Measured::broker_per), 1)
            ),
            thousands(row.fill_rate()),
        );
    }
    println!(
        "  (medians; process = CPU of this whole process per message, {broker} = the broker's \
         process(es) of that row, r/w = raw/wharf;"
    );
    println!(
        "   fill = the bench's own raw publisher pre-filling the queue before the clock, \
         acks awaited per 1,000, median over both consumers' runs)"
    );

    let found = |index: usize, wharf: bool, metric: fn(&Measured) -> f64| {
        let row = rows.get(index)?;
        let runs = if wharf { row.wharf } else { row.raw }?;
        Some(spread(runs, metric).0)
    };
    let fill_of = |index: usize| rows.get(index).map(Row::fill_rate);
    let labels: Vec<[String; 4]> = against
        .iter()
        .map(|a| {
            [
                format!("{}: raw (msg/s)", a.label),
                format!("{}: wharf (msg/s)", a.label),
                format!("{}: {broker} CPU per message, wharf", a.label),
                format!("{}: fill (msg/s)", a.label),
            ]
        })
        .collect();
    let mut lines: Vec<Ratio<'_>> = Vec::new();
    for (a, label) in against.iter().zip(&labels) {
        let of = |wharf, metric| ratio(found(a.variant, wharf, metric), found(a.base, wharf, metric));
        let values = [
            of(false, Measured::rate),
            of(true, Measured::rate),
            of(true, Measured::broker_per),
            ratio(fill_of(a.variant), fill_of(a.base)),
        ];
        for (label, value) in label.iter().zip(values) {
            lines.push((label, value.filter(|v| v.is_finite()), None));
        }
    }
    let width = labels.iter().flatten().map(String::len).max().unwrap_or(0);
    print_ratios(&lines, width);
}
