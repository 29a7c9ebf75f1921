//! `[telemetry]` and the standard `OTEL_*` variables: whether spans are
//! exported, where to, and what is sampled (resolved here; the export
//! itself is the `eddy-trace` crate's).

use std::time::Duration;

use serde::Deserialize;

/// Spans waiting for export at most, by default (`OTEL_BSP_MAX_QUEUE_SIZE`).
const QUEUE: usize = 2048;
/// Longest a finished span waits for its batch, by default
/// (`OTEL_BSP_SCHEDULE_DELAY`, milliseconds).
const DELAY: Duration = Duration::from_secs(1);

/// `[telemetry]`: where spans go (see the `eddy-trace` crate). The standard
/// `OTEL_*` variables override each key.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL, e.g. `http://otel-collector:4318`;
    /// spans are posted to `<endpoint>/v1/traces`.
    pub endpoint: Option<String>,
    /// Default `eddy`.
    pub service_name: Option<String>,
    /// Default `parentbased_always_on`.
    pub sampler: Option<String>,
    /// The ratio of the `traceidratio` samplers, 0 to 1.
    pub sampler_arg: Option<f64>,
}

/// What decides whether a trace is recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    /// A record's own context decides when it has one.
    pub parent_based: bool,
    /// The share of new traces recorded: 1.0 always, 0.0 never.
    pub ratio: f64,
}

impl Sampler {
    pub fn parse(name: &str, arg: Option<f64>) -> Result<Sampler, String> {
        let ratio = || match arg {
            Some(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
            Some(ratio) => Err(format!("the sampler ratio {ratio} is not within 0 to 1")),
            None => Ok(1.0),
        };
        let (parent_based, ratio) = match name {
            "always_on" => (false, 1.0),
            "always_off" => (false, 0.0),
            "traceidratio" => (false, ratio()?),
            "parentbased_always_on" => (true, 1.0),
            "parentbased_always_off" => (true, 0.0),
            "parentbased_traceidratio" => (true, ratio()?),
            other => {
                return Err(format!(
                    "unknown sampler {other:?}: always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
                ));
            }
        };
        Ok(Sampler {
            parent_based,
            ratio,
        })
    }

    /// Whether a new trace with this id is recorded: the same answer the
    /// OpenTelemetry SDKs give, from the id's lower 63 bits.
    pub fn root(&self, trace_id: &[u8; 16]) -> bool {
        let low = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or_default()) >> 1;
        self.ratio >= 1.0 || (low as f64) < self.ratio * (1u64 << 63) as f64
    }
}

/// Where spans go, resolved from `[telemetry]` and the environment.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The full URL spans are posted to.
    pub endpoint: String,
    pub service_name: String,
    pub sampler: Sampler,
    /// Spans waiting for export at most.
    pub queue: usize,
    /// Longest a finished span waits for its batch.
    pub delay: Duration,
}

/// The export settings, or `None` when export is off; an error names what
/// is wrong.
pub fn settings(config: &TelemetryConfig) -> Result<Option<Settings>, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none")
    {
        return Ok(None);
    }
    let endpoint = match (
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        &config.endpoint,
    ) {
        (Some(full), _, _) => full,
        (None, Some(base), _) => traces_url(&base),
        (None, None, Some(base)) if !base.trim().is_empty() => traces_url(base),
        _ => return Ok(None),
    };
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return Err(format!(
            "the OTLP endpoint {endpoint:?} is not http://: eddy sends spans over plain HTTP \
             to a collector beside it (an OpenTelemetry Collector, which can forward over TLS)"
        ));
    };
    if rest.split('/').next().is_none_or(str::is_empty) {
        return Err(format!("the OTLP endpoint {endpoint:?} names no host"));
    }
    let sampler_name = var("OTEL_TRACES_SAMPLER")
        .or_else(|| config.sampler.clone())
        .unwrap_or_else(|| "parentbased_always_on".to_string());
    let sampler_arg = match var("OTEL_TRACES_SAMPLER_ARG") {
        Some(arg) => Some(
            arg.trim()
                .parse::<f64>()
                .map_err(|_| format!("OTEL_TRACES_SAMPLER_ARG {arg:?} is not a number"))?,
        ),
        None => config.sampler_arg,
    };
    let number = |name: &str| -> Result<Option<u64>, String> {
        var(name)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{name} {v:?} is not a whole number"))
            })
            .transpose()
    };
    Ok(Some(Settings {
        endpoint,
        service_name: var("OTEL_SERVICE_NAME")
            .or_else(|| config.service_name.clone())
            .unwrap_or_else(|| "eddy".to_string()),
        sampler: Sampler::parse(sampler_name.trim(), sampler_arg)?,
        queue: number("OTEL_BSP_MAX_QUEUE_SIZE")?.map_or(QUEUE, |n| n.max(1) as usize),
        delay: number("OTEL_BSP_SCHEDULE_DELAY")?.map_or(DELAY, Duration::from_millis),
    }))
}

fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim().trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_are_named_as_the_standard_variables_name_them() {
        let always = Sampler::parse("parentbased_always_on", None).unwrap();
        assert!(always.parent_based && always.root(&[0xff; 16]));
        let never = Sampler::parse("always_off", None).unwrap();
        assert!(!never.root(&[1; 16]));
        let half = Sampler::parse("traceidratio", Some(0.5)).unwrap();
        let mut low = [0; 16];
        low[15] = 2;
        assert!(half.root(&low));
        assert!(!half.root(&[0xff; 16]));
        assert!(Sampler::parse("traceidratio", Some(1.5)).is_err());
        assert!(Sampler::parse("sometimes", None).is_err());
    }

    #[test]
    fn export_is_off_unless_an_endpoint_is_named_and_only_plain_http_is_taken() {
        let config = TelemetryConfig::default();
        assert_eq!(settings(&config), Ok(None));
        let config = TelemetryConfig {
            endpoint: Some("http://collector:4318/".into()),
            ..TelemetryConfig::default()
        };
        let on = settings(&config).unwrap().unwrap();
        assert_eq!(on.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(on.service_name, "eddy");
        let tls = TelemetryConfig {
            endpoint: Some("https://api.example.com".into()),
            ..TelemetryConfig::default()
        };
        assert!(settings(&tls).unwrap_err().contains("not http://"));
    }
}
