//! The settings both benches read from their arguments and environment.

/// `name` as a positive number, or `default` when it is not set.
pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(raw) => raw
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("{name} must be a positive number, not {raw:?}")),
        Err(_) => default,
    }
}

pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Whether this is a quick smoke run.
pub fn quick() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    // Like criterion: `cargo bench` passes `--bench`; without it (cargo
    // test --benches) or with `--test`, a quick smoke run.
    env_flag("WHARF_BENCH_QUICK") || has("--test") || !has("--bench")
}

/// The items of `WHARF_BENCH_ONLY` (comma-separated; none = everything).
pub fn only() -> Vec<String> {
    std::env::var("WHARF_BENCH_ONLY")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether the scenario `name` is among the `only` items: one is its name,
/// the start of it up to a `/`, or its end after one (all when `only` is
/// empty).
pub fn selected(name: &str, only: &[String]) -> bool {
    only.is_empty()
        || only.iter().any(|item| {
            name == *item || name.starts_with(&format!("{item}/")) || name.ends_with(&format!("/{item}"))
        })
}
