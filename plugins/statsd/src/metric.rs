//! The statsd line format: one line in, one [`Sample`] (or why it is bad).
//!
//! ```text
//! name:value|c[|@rate]     counter: add value / rate
//! name:value|g             gauge: set to value
//! name:+value|g            gauge: add value  (name:-value|g subtracts)
//! name:value|s             set: count distinct values
//! name:value|ms[|@rate]    timer: one duration in milliseconds (counts 1 / rate times)
//! ```
//!
//! Names are cleaned as Etsy's statsd does, so that they are valid Graphite paths: blanks
//! become `_`, `/` becomes `-`, and anything but ASCII letters, digits, `_`, `-` and `.` is
//! removed. A line is bad (and counted, then ignored) when it has no `:` or `|`, its name is
//! empty after cleaning, its value is not a finite number (sets take any non-empty value),
//! its type is none of the above, or it has a field other than one `@rate` with
//! 0 < rate ≤ 1 (DogStatsD tags, `|#…`, are not supported).

/// One metric update.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample<'a> {
    /// The cleaned name.
    pub name: String,
    /// What to do with it.
    pub value: Value<'a>,
}

/// The update, by metric type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// Add to a counter (already divided by the sample rate).
    Counter(f64),
    /// Set a gauge.
    Gauge(f64),
    /// Add to a gauge (negative: subtract).
    GaugeDelta(f64),
    /// A value of a set.
    Set(&'a [u8]),
    /// A timing in milliseconds, standing for `weight` = 1 / rate timings.
    Timer {
        /// Milliseconds.
        ms: f64,
        /// 1 / the sample rate.
        weight: f64,
    },
}

/// Why a line was ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadLine(pub &'static str);

/// Parse one line (without its `\n`; a trailing `\r` is ignored).
pub fn parse(line: &[u8]) -> Result<Sample<'_>, BadLine> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(BadLine("no ':' after the name"))?;
    let name = clean_name(&line[..colon]);
    if name.is_empty() {
        return Err(BadLine("empty name"));
    }
    let mut fields = line[colon + 1..].split(|&b| b == b'|');
    let value = fields.next().unwrap_or_default();
    let kind = fields.next().ok_or(BadLine("no '|type'"))?;
    let weight = match fields.next() {
        None => 1.0,
        Some(rate) => {
            let rate = rate
                .strip_prefix(b"@")
                .and_then(number)
                .filter(|r| *r > 0.0 && *r <= 1.0)
                .ok_or(BadLine("bad sample rate (want |@R with 0 < R <= 1)"))?;
            1.0 / rate
        }
    };
    if fields.next().is_some() {
        return Err(BadLine("unexpected field after the sample rate"));
    }
    let value = match kind {
        b"c" => Value::Counter(number(value).ok_or(BadLine("bad number"))? * weight),
        b"ms" => Value::Timer {
            ms: number(value).ok_or(BadLine("bad number"))?,
            weight,
        },
        b"g" => {
            let n = number(value).ok_or(BadLine("bad number"))?;
            if matches!(value.first(), Some(b'+' | b'-')) {
                Value::GaugeDelta(n)
            } else {
                Value::Gauge(n)
            }
        }
        b"s" if !value.is_empty() => Value::Set(value),
        b"s" => return Err(BadLine("empty set value")),
        _ => return Err(BadLine("unknown type (want c, g, s or ms)")),
    };
    Ok(Sample { name, value })
}

/// A finite number.
fn number(text: &[u8]) -> Option<f64> {
    std::str::from_utf8(text)
        .ok()?
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
}

/// The name as a Graphite path component (see the module docs).
pub fn clean_name(raw: &[u8]) -> String {
    let mut name = String::with_capacity(raw.len());
    let mut blank = false;
    for &b in raw {
        match b {
            b' ' | b'\t' => {
                if !blank {
                    name.push('_');
                }
                blank = true;
                continue;
            }
            b'/' => name.push('-'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => name.push(b as char),
            _ => {}
        }
        blank = false;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(line: &str) -> Value<'_> {
        parse(line.as_bytes()).unwrap().value
    }

    #[test]
    fn each_type() {
        assert_eq!(value("hits:1|c"), Value::Counter(1.0));
        assert_eq!(value("hits:3|c|@0.5"), Value::Counter(6.0));
        assert_eq!(value("hits:-2|c\r"), Value::Counter(-2.0));
        assert_eq!(value("temp:21.5|g"), Value::Gauge(21.5));
        assert_eq!(value("temp:+3|g"), Value::GaugeDelta(3.0));
        assert_eq!(value("temp:-3|g"), Value::GaugeDelta(-3.0));
        assert_eq!(value("users:alice|s"), Value::Set(b"alice"));
        assert_eq!(
            value("db:12.500000|ms"),
            Value::Timer {
                ms: 12.5,
                weight: 1.0
            }
        );
        assert_eq!(
            value("db:3|ms|@0.1"),
            Value::Timer {
                ms: 3.0,
                weight: 10.0
            }
        );
        let s = parse(b"api call/v1:1|c").unwrap();
        assert_eq!(s.name, "api_call-v1");
    }

    #[test]
    fn bad_lines() {
        for (line, why) in [
            ("hits", "no ':' after the name"),
            (":1|c", "empty name"),
            ("!!:1|c", "empty name"),
            ("hits:1", "no '|type'"),
            ("hits:x|c", "bad number"),
            ("hits:inf|c", "bad number"),
            ("hits:NaN|ms", "bad number"),
            ("hits:1|h", "unknown type (want c, g, s or ms)"),
            ("hits:1|c|0.5", "bad sample rate (want |@R with 0 < R <= 1)"),
            ("hits:1|c|@0", "bad sample rate (want |@R with 0 < R <= 1)"),
            ("hits:1|c|@2", "bad sample rate (want |@R with 0 < R <= 1)"),
            (
                "hits:1|c|#tag:x",
                "bad sample rate (want |@R with 0 < R <= 1)",
            ),
            (
                "hits:1|c|@0.5|#tag",
                "unexpected field after the sample rate",
            ),
            ("users:|s", "empty set value"),
        ] {
            assert_eq!(parse(line.as_bytes()), Err(BadLine(why)), "{line}");
        }
    }

    #[test]
    fn names_are_cleaned_for_graphite() {
        assert_eq!(clean_name(b"a b\t c"), "a_b_c");
        assert_eq!(clean_name(b"GET /users/:id"), "GET_-users-id");
        assert_eq!(clean_name(b"caf\xc3\xa9.hits"), "caf.hits");
        assert_eq!(clean_name(b"a.b-c_D9"), "a.b-c_D9");
    }
}
