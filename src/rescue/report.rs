//! The rescue's report: what it was told, what it found and did, phase by phase. Printed
//! on the console as one `LIFEBOAT-REPORT {json}` line (which drills read back into this
//! same type) and written into a local repository's `reports/`.

use serde::{Deserialize, Serialize};

use super::cmdline::{Action, Orders};
use super::dhcp::Lease;
use crate::disk::detect::Disk;
use crate::location::RepoLocation;

/// The line prefix drills and operators look for on the console.
pub const REPORT_PREFIX: &str = "LIFEBOAT-REPORT ";
pub const FAILED_PREFIX: &str = "LIFEBOAT-FAILED ";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Failed,
}

/// Seconds one phase took: serialised as `["name", seconds]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTime(pub String, pub f64);

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub lifeboat_version: String,
    pub kernel: String,
    /// The modules loaded, and the drivers the machine's devices asked for.
    #[serde(default)]
    pub modules: Option<super::modules::Loaded>,
    pub action: Option<Action>,
    /// The hardware as found before anything was written (`lifeboat diagnose`).
    #[serde(default)]
    pub hardware: Option<crate::diagnose::Diagnosis>,
    pub result: Option<Outcome>,
    pub error: Option<String>,
    pub orders: Option<Orders>,
    pub network: Option<Lease>,
    pub repo: Option<RepoLocation>,
    pub target: Option<Disk>,
    /// Every disk restored onto or captured (the first is `target`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Disk>,
    pub restore: Option<crate::restore::Summary>,
    pub capture: Option<crate::capture::Summary>,
    pub bootloader: Option<crate::boot::BootReport>,
    pub report_file: Option<String>,
    /// Seconds per phase, in order.
    pub phases: Vec<PhaseTime>,
    pub duration_s: f64,
}

impl Report {
    /// The report on a console line, if the line holds one.
    pub fn from_console_line(line: &str) -> Option<serde_json::Result<Report>> {
        let at = line.find(REPORT_PREFIX)?;
        Some(serde_json::from_str(&line[at + REPORT_PREFIX.len()..]))
    }

    pub fn succeeded(&self) -> bool {
        self.result == Some(Outcome::Ok)
    }

    /// Seconds spent in the phases named (0 for those it did not go through).
    pub fn seconds_in(&self, names: &[&str]) -> f64 {
        self.phases
            .iter()
            .filter(|p| names.contains(&p.0.as_str()))
            .map(|p| p.1)
            .sum()
    }
}

/// What follows the failure prefix on a console line.
pub fn failure_of(line: &str) -> Option<&str> {
    line.find(FAILED_PREFIX)
        .map(|at| &line[at + FAILED_PREFIX.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_goes_through_the_console_and_back() {
        let r = Report {
            lifeboat_version: "0.1.0".into(),
            result: Some(Outcome::Ok),
            repo: Some("http://10.0.2.2:8080/".parse().unwrap()),
            phases: vec![
                PhaseTime("network".into(), 1.5),
                PhaseTime("restore".into(), 2.0),
            ],
            ..Default::default()
        };
        let line = format!(
            "[   12.3] {REPORT_PREFIX}{}",
            serde_json::to_string(&r).unwrap()
        );
        assert!(line.contains(r#""phases":[["network",1.5],["restore",2.0]]"#));
        let back = Report::from_console_line(&line).unwrap().unwrap();
        assert!(back.succeeded());
        assert_eq!(back.repo, r.repo);
        assert_eq!(back.seconds_in(&["restore", "restore+verify"]), 2.0);
        assert!(Report::from_console_line("lifeboat: disks done").is_none());
        assert_eq!(
            failure_of("x LIFEBOAT-FAILED chunk 1234 is corrupt"),
            Some("chunk 1234 is corrupt")
        );
    }
}
