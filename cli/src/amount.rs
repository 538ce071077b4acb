//! Amounts for people: grouped sats with BTC beside them,
//! `14,999,995,533 sat (149.99995533 BTC)`. `--json` keeps integer sats;
//! this is only for text output.

const SAT_PER_BTC: u128 = 100_000_000;

/// Digits in groups of three: `1234567` → `1,234,567`. Also for rates
/// (sat/GiB/month, sat/period), where BTC would only crowd the table.
pub fn group(n: u64) -> String {
    group_wide(u128::from(n))
}

fn group_wide(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// The two halves of an amount, kept apart so a table can line each up.
struct Parts {
    /// `-1,000`: the sign (if any) and the grouped sats.
    sat: String,
    /// `(-0.00001000 BTC)`.
    btc: String,
}

impl Parts {
    /// `sign` goes before the sats; the BTC carries it only when negative,
    /// as a value is written (`+1,000 sat (0.00001000 BTC)`).
    fn new(sign: &str, magnitude: u128) -> Parts {
        let btc_sign = if sign == "-" { "-" } else { "" };
        Parts {
            sat: format!("{sign}{}", group_wide(magnitude)),
            btc: format!(
                "({btc_sign}{}.{:08} BTC)",
                group_wide(magnitude / SAT_PER_BTC),
                magnitude % SAT_PER_BTC
            ),
        }
    }

    fn unsigned(n: u64) -> Parts {
        Parts::new("", u128::from(n))
    }

    /// Zero has no sign: it neither came in nor went out.
    fn signed(n: i128) -> Parts {
        let sign = match n.signum() {
            1 => "+",
            -1 => "-",
            _ => "",
        };
        Parts::new(sign, n.unsigned_abs())
    }
}

/// `1,000 sat (0.00001000 BTC)`.
pub fn sats(n: u64) -> String {
    let p = Parts::unsigned(n);
    format!("{} sat {}", p.sat, p.btc)
}

/// Amounts for one table column, all of one width: the sats right-aligned
/// before ` sat`, the BTC right-aligned in the rest, so both line up
/// whatever the mix of sizes (a 50 BTC coinbase above a 546 sat payment).
pub fn column(amounts: impl IntoIterator<Item = u64>) -> Vec<String> {
    aligned(amounts.into_iter().map(Parts::unsigned).collect())
}

/// [`column`] for net amounts (a wallet tx's received minus sent), signed:
/// `+1,000 sat (0.00001000 BTC)`, `-1,000 sat (-0.00001000 BTC)`, and
/// `0 sat (0.00000000 BTC)`.
pub fn signed_column(amounts: impl IntoIterator<Item = i128>) -> Vec<String> {
    aligned(amounts.into_iter().map(Parts::signed).collect())
}

fn aligned(parts: Vec<Parts>) -> Vec<String> {
    let sat_w = parts.iter().map(|p| p.sat.len()).max().unwrap_or(0);
    let btc_w = parts.iter().map(|p| p.btc.len()).max().unwrap_or(0);
    parts
        .iter()
        .map(|p| format!("{:>sat_w$} sat {:>btc_w$}", p.sat, p.btc))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bitcoin's 21 million BTC limit, in sats.
    const MAX_MONEY: u64 = 2_100_000_000_000_000;

    /// One net amount on its own.
    fn signed_sats(n: i128) -> String {
        signed_column([n]).concat()
    }

    #[test]
    fn groups_digits_in_threes() {
        assert_eq!(group(0), "0");
        assert_eq!(group(1), "1");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(100_000), "100,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn sats_show_btc_beside_them() {
        assert_eq!(sats(0), "0 sat (0.00000000 BTC)");
        assert_eq!(sats(1), "1 sat (0.00000001 BTC)");
        assert_eq!(sats(999), "999 sat (0.00000999 BTC)");
        assert_eq!(sats(1000), "1,000 sat (0.00001000 BTC)");
        assert_eq!(sats(1_234_567), "1,234,567 sat (0.01234567 BTC)");
        assert_eq!(sats(100_000_000), "100,000,000 sat (1.00000000 BTC)");
        assert_eq!(
            sats(14_999_995_533),
            "14,999,995,533 sat (149.99995533 BTC)"
        );
        assert_eq!(
            sats(MAX_MONEY),
            "2,100,000,000,000,000 sat (21,000,000.00000000 BTC)"
        );
        assert_eq!(
            sats(u64::MAX),
            "18,446,744,073,709,551,615 sat (184,467,440,737.09551615 BTC)"
        );
    }

    #[test]
    fn signed_sats_carry_their_sign() {
        assert_eq!(signed_sats(0), "0 sat (0.00000000 BTC)");
        assert_eq!(signed_sats(1), "+1 sat (0.00000001 BTC)");
        assert_eq!(signed_sats(-1), "-1 sat (-0.00000001 BTC)");
        assert_eq!(signed_sats(1000), "+1,000 sat (0.00001000 BTC)");
        assert_eq!(signed_sats(-1000), "-1,000 sat (-0.00001000 BTC)");
        assert_eq!(signed_sats(-1_234_567), "-1,234,567 sat (-0.01234567 BTC)");
        assert_eq!(
            signed_sats(-i128::from(MAX_MONEY)),
            "-2,100,000,000,000,000 sat (-21,000,000.00000000 BTC)"
        );
        // The widest net a wallet tx can have: received or sent is a u64.
        assert_eq!(
            signed_sats(-i128::from(u64::MAX)),
            "-18,446,744,073,709,551,615 sat (-184,467,440,737.09551615 BTC)"
        );
    }

    #[test]
    fn a_column_lines_up_sats_and_btc() {
        assert_eq!(
            column([5_000_000_000, 0, 1_234_567]),
            [
                "5,000,000,000 sat (50.00000000 BTC)",
                "            0 sat  (0.00000000 BTC)",
                "    1,234,567 sat  (0.01234567 BTC)",
            ]
        );
        assert_eq!(
            signed_column([5_000_000_000, -1_000, 0]),
            [
                "+5,000,000,000 sat (50.00000000 BTC)",
                "        -1,000 sat (-0.00001000 BTC)",
                "             0 sat  (0.00000000 BTC)",
            ]
        );
        // Alone, an amount in a column is what `sats` writes.
        assert_eq!(column([1_234_567]), [sats(1_234_567)]);
        assert!(column([]).is_empty());
    }
}
