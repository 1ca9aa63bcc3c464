//! A small command line: `loadgen COMMAND [--name value]...`.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};

pub struct Args {
    pub command: String,
    options: HashMap<String, String>,
}

impl Args {
    pub fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let command = args.next().unwrap_or_default();
        let mut options = HashMap::new();
        while let Some(arg) = args.next() {
            let Some(name) = arg.strip_prefix("--") else {
                bail!("unexpected argument {arg:?}");
            };
            let value = args
                .next()
                .with_context(|| format!("--{name} needs a value"))?;
            options.insert(name.to_owned(), value);
        }
        Ok(Self { command, options })
    }

    pub fn get<T: FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.options.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|e| anyhow::anyhow!("--{name} {raw:?}: {e}")),
        }
    }

    pub fn text(&self, name: &str, default: &str) -> String {
        self.options
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }

    /// A duration such as `500ms`, `30s` or `2m`.
    pub fn duration(&self, name: &str, default: Duration) -> anyhow::Result<Duration> {
        self.options
            .get(name)
            .map_or(Ok(default), |raw| parse_duration(raw))
    }
}

pub fn parse_duration(raw: &str) -> anyhow::Result<Duration> {
    let (number, unit) = raw.split_at(raw.find(|c: char| c.is_alphabetic()).unwrap_or(raw.len()));
    let number: f64 = number
        .parse()
        .with_context(|| format!("{raw:?} is not a duration"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" | "" => number,
        "m" => number * 60.0,
        other => bail!("unknown unit {other:?} in {raw:?}"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("soon").is_err());
    }
}
