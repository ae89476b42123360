//! What a run is built of besides its plan: the S3 state store with its
//! leases, and the one delivery target `--deliver` (or stdout, -o,
//! --append) names.

use anyhow::{Context, Result};

use super::plan::Plan;
use crate::deliver::hec::Hec;
use crate::deliver::s3::Deliveries;
use crate::deliver::securityhub::SecurityHub;
use crate::deliver::{Delivery, Destination, Local};
use crate::exit::UsageError;
use crate::fleet;
use crate::state::{Bucket, Leases, S3Url, States};

/// S3 state: states and leases.
pub(super) async fn s3_state(
    plan: &Plan,
    config: &aws_config::SdkConfig,
    state: &S3Url,
) -> Result<(States, Leases)> {
    let timeout = plan.fleet.client.attempt_timeout;
    let states = Bucket::with_config(config, timeout, state.clone()).await?;
    let leases = Leases::new(states.clone(), plan.lease, crate::state::lease::holder_id())
        .map_err(|e| {
            UsageError(format!(
                "--lease {}: {e:#}",
                humantime::format_duration(plan.lease)
            ))
        })?;
    Ok((States::new(states), leases))
}

/// The run's target: `--deliver`'s, else stdout, -o or --append. HEC's
/// token is checked here, before anything is read.
pub(super) async fn delivery(plan: &Plan, fleet: &fleet::Fleet) -> Result<Delivery> {
    let style = plan.out.style(plan.now_ms);
    let timeout = plan.fleet.client.attempt_timeout;
    Ok(match &plan.deliver {
        None => Delivery::Local(Local::open(style, &plan.out.target)?),
        Some(Destination::Objects(url)) => Delivery::Objects(Deliveries::new(
            Bucket::with_config(&fleet.base, timeout, url.clone()).await?,
            style,
        )),
        Some(Destination::SecurityHub { region }) => Delivery::SecurityHub(SecurityHub::new(
            region.clone(),
            fleet.scopes.iter().map(|s| (s.account.as_str(), &s.config)),
            style,
        )),
        Some(Destination::Hec(_)) => {
            let settings = plan.hec.clone().context("HEC's settings are missing")?;
            Delivery::Hec(Box::new(Hec::connect(settings, style, timeout).await?))
        }
    })
}
