//! What the coming periods of the client's contracts will cost, against
//! what the wallet holds: `wallet budget`, and the warning the payment
//! scheduler logs when the wallet runs short.

use tracing::warn;

use super::ClientService;
use super::payment::{files_on, needed_until};
use crate::error::Result;
use crate::protocol::payment_amount;

/// Virtual size of a period payment: one input, the change, and an
/// output per contract (P2WPKH); what fees are estimated on.
fn payment_vsize(outputs: u64) -> u64 {
    const OVERHEAD: u64 = 11;
    const INPUT: u64 = 68;
    const OUTPUT: u64 = 31;
    OVERHEAD + INPUT + OUTPUT * (outputs + 1)
}

impl ClientService {
    /// The next `periods` periods (default `budget_warn_periods`) of every
    /// running contract that files still need.
    pub async fn budget(&self, periods: Option<u32>) -> Result<p2pstore_rpc::Budget> {
        let periods = periods.unwrap_or(self.budget_warn_periods);
        let manifests = self.manifests.list()?;
        let mut lines = Vec::new();
        // Contracts paying in each coming period, for the fee estimate.
        let mut per_round = vec![0u64; periods as usize];
        for c in self.contracts.list()? {
            if !c.is_live() || c.allowance_bytes == 0 {
                continue;
            }
            let files = files_on(&c, &manifests);
            let Some(period_sat) = payment_amount(
                c.price_sat_per_gib_month,
                c.allowance_bytes,
                c.period_blocks,
            ) else {
                continue;
            };
            let mut count = 0u32;
            for (k, round) in per_round.iter_mut().enumerate() {
                let start = c
                    .paid_through_height
                    .saturating_add(c.period_blocks.saturating_mul(k as u32));
                let through = start.saturating_add(c.period_blocks);
                if needed_until(&c, &files, through) <= start {
                    break;
                }
                *round += 1;
                count += 1;
            }
            if count == 0 {
                continue;
            }
            lines.push(p2pstore_rpc::BudgetLine {
                contract_id: c.contract_id.to_string(),
                peer_id: c.peer.to_string(),
                period_sat,
                periods: count,
                total_sat: period_sat.saturating_mul(count as u64),
                next_payment_height: c.next_payment(self.renew_before_blocks).map(|(h, _)| h),
            });
        }
        let payments_sat = lines
            .iter()
            .fold(0u64, |a, l| a.saturating_add(l.total_sat));
        let rate = self.fee_rate().await;
        let fees_sat = per_round.iter().filter(|n| **n > 0).fold(0u64, |a, n| {
            a.saturating_add(rate.saturating_mul(payment_vsize(*n)))
        });
        let total_sat = payments_sat.saturating_add(fees_sat);
        let b = self.wallet.balance();
        let spendable_sat = b.confirmed_sat.saturating_add(b.unconfirmed_sat);
        let shortfall_sat = total_sat.saturating_sub(spendable_sat);
        let warning = (shortfall_sat > 0).then(|| {
            format!(
                "the wallet holds {spendable_sat} sat, {shortfall_sat} sat short of the next \
                 {periods} periods ({total_sat} sat); fund it or files will lapse"
            )
        });
        Ok(p2pstore_rpc::Budget {
            periods,
            contracts: lines,
            payments_sat,
            fees_sat,
            total_sat,
            spendable_sat,
            shortfall_sat,
            warning,
        })
    }

    /// Logs the budget's warning, if any: called after each round of
    /// period payments.
    pub(super) async fn warn_if_short(&self) {
        match self.budget(None).await {
            Ok(b) => {
                if let Some(w) = b.warning {
                    warn!("{w}");
                }
            }
            Err(e) => warn!("cannot compute the budget: {e}"),
        }
    }
}
