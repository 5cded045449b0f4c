//! Reports and charts (SVG via plotters): the data report of `curate` and
//! the scatter chart of `eval`.

use crate::data::{CuratedItem, Tally};
use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use pricer::metrics::Grade;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

const SIZE: (u32, u32) = (800, 480);

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing chart: {e:?}")
}

/// A histogram of `values` in `bins` equal bins over [lo, hi).
pub fn histogram(
    path: &Path,
    caption: &str,
    x_label: &str,
    values: &[f64],
    lo: f64,
    hi: f64,
    bins: usize,
) -> Result<()> {
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0u32; bins];
    for v in values {
        let b = (((v - lo) / width).floor().max(0.0) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(lo..hi, 0u32..top + top / 10 + 1)
        .map_err(plot_err)?;
    chart.configure_mesh().x_desc(x_label).y_desc("items").draw().map_err(plot_err)?;
    chart
        .draw_series(counts.iter().enumerate().map(|(i, c)| {
            let x0 = lo + i as f64 * width;
            Rectangle::new([(x0, 0), (x0 + width, *c)], RGBColor(70, 110, 200).filled())
        }))
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// A horizontal bar per label.
pub fn bars(path: &Path, caption: &str, counts: &BTreeMap<String, usize>) -> Result<()> {
    let labels: Vec<&String> = counts.keys().collect();
    let n = labels.len();
    let top = counts.values().copied().max().unwrap_or(1).max(1);
    let root = SVGBackend::new(path, (SIZE.0, 120 + 36 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(240)
        .build_cartesian_2d(0usize..top + top / 10 + 1, 0f64..n as f64)
        .map_err(plot_err)?;
    // One label at the middle of each bar: row i spans [i, i + 1).
    chart
        .configure_mesh()
        .y_labels(2 * n + 1)
        .y_label_formatter(&|v| {
            let i = v.floor() as usize;
            if (v - i as f64 - 0.5).abs() < 1e-6 {
                labels.get(i).map(|s| s.to_string()).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .disable_y_mesh()
        .x_desc("items")
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(counts.values().enumerate().map(|(i, c)| {
            Rectangle::new([(0, i as f64 + 0.15), (*c, i as f64 + 0.85)], RGBColor(70, 110, 200).filled())
        }))
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Truth against estimate, each point coloured as the Tester grades it, with y = x.
pub fn scatter(path: &Path, caption: &str, pairs: &[(f64, f64)]) -> Result<()> {
    let max = pairs.iter().flat_map(|(e, t)| [*e, *t]).fold(1.0f64, f64::max) * 1.05;
    let root = SVGBackend::new(path, (640, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..max, 0.0..max)
        .map_err(plot_err)?;
    chart.configure_mesh().x_desc("true price ($)").y_desc("estimate ($)").draw().map_err(plot_err)?;
    chart.draw_series(LineSeries::new([(0.0, 0.0), (max, max)], BLACK.mix(0.5).stroke_width(1))).map_err(plot_err)?;
    chart
        .draw_series(pairs.iter().map(|(e, t)| {
            let c = match Grade::of(*e, *t) {
                Grade::Green => RGBColor(42, 157, 75),
                Grade::Orange => RGBColor(240, 140, 0),
                Grade::Red => RGBColor(214, 40, 40),
            };
            Circle::new((*t, *e), 3, c.mix(0.75).filled())
        }))
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// The data report of a curation run: charts and `report.md`.
pub fn write_data_report(
    dir: &Path,
    items: &[&CuratedItem],
    token_lengths: &[usize],
    tally: &Tally,
    tokenizer: bool,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let prices: Vec<f64> = items.iter().map(|i| i.price).collect();
    let log_prices: Vec<f64> = prices.iter().map(|p| p.ln_1p()).collect();
    let mut by_cat: BTreeMap<String, usize> = BTreeMap::new();
    for i in items {
        *by_cat.entry(i.category.clone().unwrap_or_else(|| "(none)".into())).or_default() += 1;
    }
    // Per source format: items and their median price (the formats come from
    // differently balanced samples).
    let mut by_format: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for i in items {
        by_format.entry(i.source_format.map(|f| f.name()).unwrap_or("(unknown)")).or_default().push(i.price);
    }
    // The 20 largest categories by name; the rest counted together.
    if by_cat.len() > 21 {
        let mut sizes: Vec<(String, usize)> = by_cat.clone().into_iter().collect();
        sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let rest: usize = sizes[20..].iter().map(|s| s.1).sum();
        let others = format!("({} other categories)", sizes.len() - 20);
        by_cat = sizes.into_iter().take(20).collect();
        by_cat.insert(others, rest);
    }
    let max_price = prices.iter().copied().fold(1.0, f64::max);
    histogram(&dir.join("prices.svg"), "Prices", "price ($)", &prices, 0.0, max_price.ceil(), 50)?;
    histogram(&dir.join("log-prices.svg"), "Prices, log scale", "ln(1 + price)", &log_prices, 0.0, 7.0, 50)?;
    bars(&dir.join("categories.svg"), "Items per category", &by_cat)?;
    let unit = if tokenizer { "tokens" } else { "words" };
    let lens: Vec<f64> = token_lengths.iter().map(|&l| l as f64).collect();
    let max_len = lens.iter().copied().fold(1.0, f64::max);
    histogram(&dir.join("token-lengths.svg"), &format!("Text length ({unit})"), unit, &lens, 0.0, max_len + 1.0, 40)?;

    let mut sorted = prices.clone();
    let median = pricer::metrics::median(&mut sorted);
    let mean = prices.iter().sum::<f64>() / prices.len().max(1) as f64;
    let mut md = String::new();
    writeln!(md, "# Data report\n")?;
    writeln!(md, "{} records read, {} kept.\n", tally.read, tally.kept)?;
    writeln!(md, "## Dropped, by reason\n\n| reason | items |\n| --- | ---: |")?;
    for (k, v) in &tally.dropped {
        writeln!(md, "| {k} | {v} |")?;
    }
    writeln!(md, "\n## Source formats\n\n| format | items | median price |\n| --- | ---: | ---: |")?;
    for (k, v) in by_format.iter_mut() {
        writeln!(md, "| {k} | {} | ${:.2} |", v.len(), pricer::metrics::median(v))?;
    }
    writeln!(md, "\n## Categories\n\n| category | items |\n| --- | ---: |")?;
    for (k, v) in &by_cat {
        writeln!(md, "| {k} | {v} |")?;
    }
    writeln!(md, "\n![Items per category](categories.svg)\n")?;
    writeln!(md, "## Prices\n\n| statistic | value |\n| --- | ---: |")?;
    writeln!(md, "| items | {} |", prices.len())?;
    writeln!(md, "| min | ${:.2} |", sorted.first().unwrap_or(&0.0))?;
    writeln!(md, "| median | ${median:.2} |")?;
    writeln!(md, "| mean | ${mean:.2} |")?;
    writeln!(md, "| max | ${:.2} |", sorted.last().unwrap_or(&0.0))?;
    writeln!(md, "\n![Prices](prices.svg)\n\n![Log prices](log-prices.svg)\n")?;
    let mut l = lens.clone();
    writeln!(md, "## Text length\n\nMedian {:.0} {unit}, max {:.0}.\n", pricer::metrics::median(&mut l), max_len)?;
    writeln!(md, "![Text length](token-lengths.svg)")?;
    std::fs::write(dir.join("report.md"), md)?;
    Ok(())
}
