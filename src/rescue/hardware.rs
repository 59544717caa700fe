//! The rescue's hardware report (`lifeboat diagnose`), made before anything is written,
//! and what a restore does with it: a target that cannot be found is explained by the
//! controllers without a driver; a target whose health says it is failing is refused.

use anyhow::Result;

use super::report::Report;

/// Diagnose the machine, say it on the console, keep it in the report.
pub(super) fn diagnose(report: &mut Report) -> Result<()> {
    // Mounted now so that the report can say whether Secure Boot is on.
    let _ = super::mounts::efivars();
    let hw = crate::diagnose::run()?;
    for l in hw.lines() {
        println!("lifeboat: hardware: {l}");
    }
    report.hardware = Some(hw);
    Ok(())
}

/// A target the machine's disks could not give: the controllers without a driver are
/// the likely reason, said with it.
pub(super) fn with_problems(e: anyhow::Error, report: &Report) -> anyhow::Error {
    match report.hardware.as_ref().map(|h| h.problems.clone()) {
        Some(p) if !p.is_empty() => e.context(p.join("; ")),
        _ => e,
    }
}
