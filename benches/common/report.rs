//! Pieces of the report both benches print: numbers with thousands
//! separators, the URL without its secrets, and the ratios with their goals.

pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "-".to_owned();
    }
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What a ratio should be.
#[derive(Clone, Copy)]
pub enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

/// A ratio of the report: its label, its value if both of its scenarios
/// ran, and its goal if it has one.
pub type Ratio<'a> = (&'a str, Option<f64>, Option<Goal>);

/// Of two medians, `a / b` when both ran.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).map(|(a, b)| a / b)
}

/// Prints the ratios that have a value, labels `width` wide, each with
/// whether it met its goal; nothing if none has.
pub fn print_ratios(lines: &[Ratio<'_>], width: usize) {
    if lines.iter().all(|(_, value, _)| value.is_none()) {
        return;
    }
    println!();
    println!("ratios (of the medians)");
    for &(label, value, goal) in lines {
        let Some(value) = value else { continue };
        let verdict = match goal {
            Some(Goal::AtLeast(goal)) if value >= goal => format!("goal >= {goal}: MET"),
            Some(Goal::AtLeast(goal)) => format!("goal >= {goal}: MISSED"),
            Some(Goal::AtMost(goal)) if value <= goal => format!("goal <= {goal}: MET"),
            Some(Goal::AtMost(goal)) => format!("goal <= {goal}: MISSED"),
            None => String::new(),
        };
        println!("  {label:<width$} {value:>6.2}  {verdict}");
    }
}

/// The URL without its password or token, for printing.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => format!("{}***{}", &url[..scheme + 3], &url[at..]),
            }
        }
        _ => url.to_owned(),
    }
}
