//! How the page writes numbers and files: dollars, counts, percents, and
//! the CSV of a priced file.

use crate::protocol::BatchRow;

/// $1,234.50
pub fn dollars(x: f64) -> String {
    let cents = (x * 100.0).round() as i64;
    let (whole, frac) = (cents / 100, (cents % 100).abs());
    format!("{}${}.{frac:02}", if x < 0.0 { "-" } else { "" }, thousands(whole.unsigned_abs() as usize))
}

/// 12,345 (digits grouped by three)
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Percent change of a log(1 + price) weight: +12%.
pub fn percent(weight: f64) -> String {
    format!("{:+.0}%", 100.0 * weight.exp_m1())
}

/// One CSV field: [`pricer::text::spreadsheet_safe`] (no formula runs),
/// quoted when it holds a separator, a quote or a line break (a bare CR
/// too, which spreadsheets take as a row end).
pub fn csv_field(s: &str) -> String {
    let s = pricer::text::spreadsheet_safe(s);
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.into_owned() }
}

/// A batch's rows as the CSV the page offers for download.
pub fn batch_csv(rows: &[BatchRow]) -> String {
    let mut csv = String::from("line,title,estimate,low,high,error\n");
    for r in rows {
        match &r.result {
            Ok((p, l, h)) => csv.push_str(&format!("{},{},{p:.2},{l:.2},{h:.2},\n", r.line, csv_field(&r.title))),
            Err(e) => csv.push_str(&format!("{},{},,,,{}\n", r.line, csv_field(&r.title), csv_field(e))),
        }
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_and_counts_are_grouped_by_thousands() {
        assert_eq!(dollars(1234567.891), "$1,234,567.89");
        assert_eq!(dollars(-5.5), "-$5.50");
        assert_eq!(dollars(0.0), "$0.00");
        assert_eq!(thousands(2000), "2,000");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn csv_cells_never_run_as_formulas_and_keep_their_rows() {
        assert_eq!(csv_field("Desk lamp"), "Desk lamp");
        assert_eq!(csv_field("=HYPERLINK(\"http://x\",\"y\")"), "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-2"), "'-2");
        assert_eq!(csv_field("\tcmd"), "'\tcmd");
        assert_eq!(csv_field("a\rb"), "\"a\rb\"");
        assert_eq!(csv_field("a, b"), "\"a, b\"");
        let rows = vec![
            BatchRow { line: 2, title: "=1+1".into(), result: Ok((9.5, 7.0, 12.25)) },
            BatchRow { line: 3, title: String::new(), result: Err("invalid JSON, at 3".into()) },
        ];
        assert_eq!(
            batch_csv(&rows),
            "line,title,estimate,low,high,error\n2,'=1+1,9.50,7.00,12.25,\n3,,,,,\"invalid JSON, at 3\"\n"
        );
    }
}
