//! Checks across keys: services that cannot hold together, service names, and the
//! "did you mean" suggestion for an unknown key.

use super::Origin;
use crate::cli::Config;
use crate::error::Problem;

/// Settings that cannot hold together: two services of one name, or one address bound twice.
pub(super) fn conflicts(config: &Config, origins: &[Origin]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, s) in config.services.iter().enumerate() {
        if let Some(first) = config.services[..i].iter().position(|o| o.name == s.name) {
            let key = if origins[i].keys.contains_key("name") {
                "name"
            } else {
                "plugin"
            };
            problems.push(origins[i].problem(
                key,
                format!("a second service named {:?} (the first is service[{}]); give each a distinct `name`", s.name, first + 1),
            ));
        }
    }
    let all: Vec<(usize, &crate::bind::BindSpec)> = config
        .services
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.binds.iter().map(move |b| (i, b)))
        // Port 0 is a new free port each time.
        .filter(|(_, b)| b.port != 0 || b.transport == crate::bind::SocketKind::Unix)
        .collect();
    for (n, (i, bind)) in all.iter().enumerate() {
        if let Some((j, _)) = all[..n].iter().find(|(_, b)| b == bind) {
            problems.push(origins[*i].problem(
                "bind",
                format!(
                    "{bind} is bound twice (also by service[{}] {:?})",
                    j + 1,
                    config.services[*j].name
                ),
            ));
        }
    }
    problems
}

/// `letters, digits, '-', '_'`: a service name is a metrics label value and a log field.
pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The closest known key, if it is close (a typo).
pub(super) fn suggest<'k>(key: &str, known: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    known
        .map(|k| (distance(key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance.
pub(super) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j]))
                .min(row[j] + 1)
                .min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
