//! Readers: raw records (Amazon 2023 JSONL, curated JSONL, CSV) into [`Product`]s.
//!
//! Every reader streams: it holds one record at a time, never a whole file.
//! A malformed record is an `Err` item naming its line and what was wrong; the
//! caller decides whether to skip it or stop.

use crate::{Product, SourceFormat};
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader, Read};

/// One record that could not be read, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct RecordError {
    pub line: u64,
    pub reason: String,
}

/// The kinds of file Pricer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON Lines: Amazon 2023 raw metadata or curated records, told apart per line.
    Jsonl,
    /// CSV with a header: `title` required; `price`, `description`, `category` optional.
    Csv,
}

impl Format {
    /// Guesses the format from a file name (`.csv`, `.csv.gz` are CSV; the rest JSONL).
    pub fn from_name(name: &str) -> Format {
        let lower = name.to_ascii_lowercase();
        let lower = lower.strip_suffix(".gz").unwrap_or(&lower);
        if lower.ends_with(".csv") { Format::Csv } else { Format::Jsonl }
    }
}

/// Wraps a byte stream, decompressing it when it starts with the gzip magic.
pub fn decompressed<R: Read + 'static>(inner: R) -> std::io::Result<Box<dyn BufRead>> {
    let mut buf = BufReader::new(inner);
    let head = buf.fill_buf()?;
    if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        Ok(Box::new(BufReader::new(flate2::bufread::MultiGzDecoder::new(buf))))
    } else {
        Ok(Box::new(buf))
    }
}

/// Reads products from a stream in the given format (gzip detected by content).
pub fn read_products<R: Read + 'static>(
    inner: R,
    format: Format,
) -> std::io::Result<Box<dyn Iterator<Item = Result<Product, RecordError>>>> {
    read_products_as(inner, format, Prices::DecimalPoint)
}

/// [`read_products`], prices written as text read as `prices` says.
pub fn read_products_as<R: Read + 'static>(
    inner: R,
    format: Format,
    prices: Prices,
) -> std::io::Result<Box<dyn Iterator<Item = Result<Product, RecordError>>>> {
    Ok(Box::new(read_numbered_products_as(inner, format, prices)?.map(|(_, record)| record)))
}

/// A record with the file's line it starts on (1-based, physical lines,
/// CRLF or LF), so that products and errors can be listed in file order.
pub type NumberedRecord = (u64, Result<Product, RecordError>);

/// [`read_products_as`], each record with its line.
pub fn read_numbered_products_as<R: Read + 'static>(
    inner: R,
    format: Format,
    prices: Prices,
) -> std::io::Result<Box<dyn Iterator<Item = NumberedRecord>>> {
    let mut stream = decompressed(inner)?;
    Ok(match format {
        Format::Jsonl => {
            let mut jsonl = JsonlReader { prices, ..JsonlReader::new(stream) };
            Box::new(std::iter::from_fn(move || jsonl.next().map(|r| (jsonl.line, r))))
        }
        Format::Csv => {
            let delimiter = sniff_delimiter(stream.fill_buf()?);
            let mut csv = CsvReader::with_delimiter(CrlfAsLf { inner: stream, pending_cr: false }, delimiter);
            csv.prices = prices;
            Box::new(std::iter::from_fn(move || {
                csv.next().map(|r| (r.as_ref().map_or_else(|e| e.line, |_| csv.line), r))
            }))
        }
    })
}

/// The CSV separator of a file from its first line: `,`, unless the header
/// names a `title` column only when split by `;` or by tabs (the exports of
/// spreadsheets set to a decimal comma use `;`).
fn sniff_delimiter(head: &[u8]) -> u8 {
    let first = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let first = String::from_utf8_lossy(first);
    let has_title = |sep: char| first.split(sep).any(|c| c.trim().trim_matches('"').eq_ignore_ascii_case("title"));
    if has_title(',') {
        b','
    } else if has_title(';') {
        b';'
    } else if has_title('\t') {
        b'\t'
    } else {
        b','
    }
}

/// A stream with the CR of each CRLF line end dropped, so that the CSV
/// parser numbers Windows lines as it numbers Unix ones (with CRLF it named
/// the line before the one at fault). A lone CR stays.
struct CrlfAsLf<R> {
    inner: R,
    pending_cr: bool,
}

impl<R: BufRead> Read for CrlfAsLf<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                if std::mem::take(&mut self.pending_cr) {
                    out[n] = b'\r';
                    n += 1;
                }
                break;
            }
            let mut used = 0;
            while used < buf.len() && n < out.len() {
                let b = buf[used];
                if self.pending_cr {
                    self.pending_cr = false;
                    if b != b'\n' {
                        out[n] = b'\r';
                        n += 1;
                    }
                    continue;
                }
                if b == b'\r' {
                    self.pending_cr = true;
                } else {
                    out[n] = b;
                    n += 1;
                }
                used += 1;
            }
            self.inner.consume(used);
            if n > 0 {
                break;
            }
        }
        Ok(n)
    }
}

/// Streams JSON Lines of raw Amazon metadata or curated records.
pub struct JsonlReader<R> {
    inner: R,
    line: u64,
    buf: Vec<u8>,
    done: bool,
    prices: Prices,
}

/// Longest line accepted: a record larger than this is an error, not an allocation.
pub const MAX_LINE_BYTES: usize = 16 << 20;

impl<R: BufRead> JsonlReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, line: 0, buf: Vec::new(), done: false, prices: Prices::DecimalPoint }
    }
}

impl<R: BufRead> Iterator for JsonlReader<R> {
    type Item = Result<Product, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            self.buf.clear();
            self.line += 1;
            let line = self.line;
            let err = |reason: String| Some(Err(RecordError { line, reason }));
            let read = (&mut self.inner).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut self.buf);
            match read {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    self.done = true;
                    return err(format!("read failed: {e}"));
                }
            }
            if self.buf.len() > MAX_LINE_BYTES && !self.buf.ends_with(b"\n") {
                // Skip the rest of the oversized line so the next one is read
                // whole, a buffer at a time: never holding the line in memory.
                loop {
                    let (found, n) = match self.inner.fill_buf() {
                        Ok([]) | Err(_) => break,
                        Ok(chunk) => match chunk.iter().position(|&b| b == b'\n') {
                            Some(i) => (true, i + 1),
                            None => (false, chunk.len()),
                        },
                    };
                    self.inner.consume(n);
                    if found {
                        break;
                    }
                }
                return err(format!("line longer than {MAX_LINE_BYTES} bytes"));
            }
            let Ok(text) = std::str::from_utf8(&self.buf) else {
                return err("not valid UTF-8".into());
            };
            if text.trim().is_empty() {
                continue;
            }
            return Some(parse_json_record_as(text, self.prices).map_err(|reason| RecordError { line, reason }));
        }
    }
}

/// Parses one JSON record: curated (has a `text` string) or raw Amazon metadata.
pub fn parse_json_record(text: &str) -> Result<Product, String> {
    parse_json_record_as(text, Prices::DecimalPoint)
}

/// [`parse_json_record`], a price written as text read as `prices` says.
pub fn parse_json_record_as(text: &str, prices: Prices) -> Result<Product, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("expected a JSON object".into());
    };
    let title = match obj.get("title") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Value::String(_)) | None | Some(Value::Null) => return Err("missing title".into()),
        Some(other) => return Err(format!("title is not a string: {}", short(other))),
    };
    let price = parse_price_as(obj.get("price"), prices)?;
    let category = ["category", "main_category"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str))
        .map(str::to_string)
        .filter(|s| !s.is_empty());
    let details = parse_details(obj.get("details"))?;
    if let Some(Value::String(text)) = obj.get("text") {
        let format = match obj.get("format") {
            None | Some(Value::Null) => SourceFormat::Curated,
            Some(Value::String(f)) => SourceFormat::from_name(f)
                .filter(|f| TEXT_FORMATS.contains(f))
                .ok_or_else(|| format!("unknown text format {f:?} (expected one of: {})", text_format_names()))?,
            Some(other) => return Err(format!("format is not a string: {}", short(other))),
        };
        if matches!(format, SourceFormat::LlmSummary | SourceFormat::RawFields) {
            // Written as labelled fields: read them back into the product's parts,
            // so they are prepared like any raw record.
            let mut p = labelled_fields(text);
            p.title = title;
            p.price = price;
            p.category = category.or(p.category);
            p.details = match (details, p.details) {
                (Some(mut d), Some(extra)) => {
                    for (k, v) in extra {
                        d.entry(k).or_insert(v);
                    }
                    Some(d)
                }
                (d, extra) => d.or(extra),
            };
            p.format = Some(format);
            return Ok(p);
        }
        // Curated: the text is title line + prepared content.
        let body = text.split_once('\n').map(|(_, b)| b).unwrap_or("").trim();
        return Ok(Product {
            title,
            category,
            description: if body.is_empty() { vec![] } else { vec![body.to_string()] },
            features: vec![],
            details,
            price,
            prepared_text: Some(text.clone()),
            format: Some(format),
        });
    }
    Ok(Product {
        title,
        category,
        description: string_list(&obj, "description")?,
        features: string_list(&obj, "features")?,
        details,
        price,
        prepared_text: None,
        format: Some(SourceFormat::AmazonRaw),
    })
}

/// The main categories of Amazon Reviews 2023.
pub const AMAZON_CATEGORIES: [&str; 33] = [
    "All_Beauty",
    "Amazon_Fashion",
    "Appliances",
    "Arts_Crafts_and_Sewing",
    "Automotive",
    "Baby_Products",
    "Beauty_and_Personal_Care",
    "Books",
    "CDs_and_Vinyl",
    "Cell_Phones_and_Accessories",
    "Clothing_Shoes_and_Jewelry",
    "Digital_Music",
    "Electronics",
    "Gift_Cards",
    "Grocery_and_Gourmet_Food",
    "Handmade_Products",
    "Health_and_Household",
    "Health_and_Personal_Care",
    "Home_and_Kitchen",
    "Industrial_and_Scientific",
    "Kindle_Store",
    "Magazine_Subscriptions",
    "Movies_and_TV",
    "Musical_Instruments",
    "Office_Products",
    "Patio_Lawn_and_Garden",
    "Pet_Supplies",
    "Software",
    "Sports_and_Outdoors",
    "Subscription_Boxes",
    "Tools_and_Home_Improvement",
    "Toys_and_Games",
    "Video_Games",
];

/// The formats a record with a `text` field may name.
const TEXT_FORMATS: [SourceFormat; 4] =
    [SourceFormat::Curated, SourceFormat::CuratedScrubbedTitle, SourceFormat::LlmSummary, SourceFormat::RawFields];

fn text_format_names() -> String {
    TEXT_FORMATS.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
}

/// A product from text written as labelled fields (`Title: ...`, `Category: ...`,
/// `Brand: ...`, `Weight: ...`, `Description: ...`, `Features: ...`,
/// `Details: ...`, `Summary: ...`), one field per line, continuation lines
/// belonging to the field above. List values written as Python or JSON lists
/// become one entry per element; a `Details` JSON object becomes the details.
/// Text before the first label is kept as description.
pub fn labelled_fields(text: &str) -> Product {
    const LABELS: [&str; 8] = ["Title", "Category", "Brand", "Weight", "Description", "Features", "Details", "Summary"];
    let mut fields: Vec<(&str, String)> = vec![("Description", String::new())];
    for line in text.lines() {
        let trimmed = line.trim_start();
        let label = LABELS
            .iter()
            .find(|l| trimmed.strip_prefix(**l).is_some_and(|rest| rest.trim_start_matches(' ').starts_with(':')));
        match label {
            Some(l) => {
                let value = trimmed[l.len()..].trim_start_matches(' ')[1..].trim();
                fields.push((l, value.to_string()));
            }
            None => {
                let last = &mut fields.last_mut().expect("starts with one field").1;
                if !last.is_empty() {
                    last.push('\n');
                }
                last.push_str(line.trim());
            }
        }
    }
    let mut p = Product::default();
    let mut details = Map::new();
    for (label, value) in fields {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match label {
            "Title" => p.title = value.to_string(),
            "Category" => {
                // Amazon's main categories become the category; an LLM's own
                // labels ("Audio Equipment") stay text, in the details.
                let name = value.replace(' ', "_");
                if AMAZON_CATEGORIES.contains(&name.as_str()) {
                    p.category = Some(name);
                } else {
                    details.insert("Category".into(), Value::String(value.into()));
                }
            }
            "Brand" => {
                details.insert("Brand".into(), Value::String(value.into()));
            }
            "Weight" => {
                details.insert("Item Weight".into(), Value::String(value.into()));
            }
            "Features" => p.features.extend(list_items(value)),
            "Details" => match serde_json::from_str::<Value>(value) {
                Ok(Value::Object(m)) => details.extend(m),
                _ => p.features.extend(list_items(value)),
            },
            _ => p.description.extend(list_items(value)),
        }
    }
    if !details.is_empty() {
        p.details = Some(details);
    }
    p
}

/// The elements of a Python or JSON list of strings (`['a', "b"]`), or the
/// text itself when it is not one.
pub fn list_items(text: &str) -> Vec<String> {
    let t = text.trim();
    match t.strip_prefix('[').and_then(|r| r.strip_suffix(']')).and_then(quoted_strings) {
        Some(items) => items.into_iter().filter(|s| !s.trim().is_empty()).collect(),
        None => vec![t.to_string()],
    }
}

/// Parses `'a', "b", ...` (Python string literals with backslash escapes);
/// `None` when the text is anything else.
fn quoted_strings(inner: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        let Some(quote) = chars.next() else { return Some(out) };
        if quote != '\'' && quote != '"' {
            return None;
        }
        let mut s = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'u' => {
                        let hex: String = (0..4).filter_map(|_| chars.next()).collect();
                        s.push(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32).unwrap_or('\u{fffd}'));
                    }
                    other => s.push(other),
                },
                c if c == quote => break,
                c => s.push(c),
            }
        }
        out.push(s);
        // Only separators may follow a string.
        if chars.peek().is_some_and(|c| !c.is_whitespace() && *c != ',') {
            return None;
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 { format!("{}...", s.chars().take(40).collect::<String>()) } else { s }
}

/// The highest price a reader accepts. The catalogues' prices stay below
/// $1,000; a price above this is a typo or a hostile value, and it would
/// dominate any mean it entered.
pub const MAX_PRICE: f64 = 1_000_000.0;

/// How prices written as text mark decimals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Prices {
    /// `1,299.99`: a decimal point, commas between thousands (the default).
    #[default]
    DecimalPoint,
    /// `1.299,99`: a decimal comma, points between thousands
    /// (`pricer ... --decimal-comma`).
    DecimalComma,
}

/// The price grammar every reader shares (curate, eval, adapt, the page's
/// files): a number, a numeric string, or nothing (`null`, `"None"`, `""`,
/// absent). See [`parse_price_str`] for text. A price must be finite, above
/// zero and at most [`MAX_PRICE`].
pub fn parse_price(v: Option<&Value>) -> Result<Option<f64>, String> {
    parse_price_as(v, Prices::DecimalPoint)
}

/// [`parse_price`], text read as `prices` says.
pub fn parse_price_as(v: Option<&Value>, prices: Prices) -> Result<Option<f64>, String> {
    let p = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().ok_or("price is not a number")?,
        Some(Value::String(s)) => return parse_price_str_as(s, prices),
        Some(other) => return Err(format!("price is not a number: {}", short(other))),
    };
    check_price(p).map(Some)
}

/// A price from text: an optional `$`, digits with an optional decimal
/// point, and commas only between groups of three digits (`$1,299.00` is
/// 1299). A comma that could be a decimal comma (`12,99`) is refused rather
/// than read as 1299. Empty, `None`, `null`, `n/a` and `nan` mean unknown.
pub fn parse_price_str(s: &str) -> Result<Option<f64>, String> {
    parse_price_str_as(s, Prices::DecimalPoint)
}

/// [`parse_price_str`] with decimals marked as `prices` says: with a decimal
/// comma the roles of `.` and `,` swap (`1.299,99` is 1299.99, and `12.99`
/// is as ambiguous as `12,99` is with a decimal point).
pub fn parse_price_str_as(s: &str, prices: Prices) -> Result<Option<f64>, String> {
    let t = s.trim();
    if t.is_empty() || ["none", "null", "nan", "n/a"].contains(&t.to_ascii_lowercase().as_str()) {
        return Ok(None);
    }
    let number = t.strip_prefix('$').unwrap_or(t).trim();
    let swapped: String;
    let number = match prices {
        Prices::DecimalPoint => number,
        Prices::DecimalComma => {
            swapped = number
                .chars()
                .map(|c| {
                    if c == '.' {
                        ','
                    } else if c == ',' {
                        '.'
                    } else {
                        c
                    }
                })
                .collect();
            &swapped
        }
    };
    let cleaned = if number.contains(',') {
        let whole = number.split('.').next().unwrap_or("");
        let groups: Vec<&str> = whole.split(',').collect();
        let thousands = number.matches('.').count() <= 1
            && groups.len() > 1
            && (1..=3).contains(&groups[0].len())
            && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_digit()))
            && groups[1..].iter().all(|g| g.len() == 3);
        if !thousands {
            return Err(match prices {
                Prices::DecimalPoint => format!(
                    "price {t:?}: a comma here is not a thousands separator (a decimal comma? write {:?}, \
                     or read the file with --decimal-comma)",
                    number.replace('.', "").replace(',', ".")
                ),
                Prices::DecimalComma => {
                    format!("price {t:?}: with decimal commas, points may only separate thousands")
                }
            });
        }
        number.replace(',', "")
    } else {
        number.to_string()
    };
    let p: f64 = cleaned.parse().map_err(|_| format!("price is not a number: {t:?}"))?;
    check_price(p).map(Some)
}

fn check_price(p: f64) -> Result<f64, String> {
    if !p.is_finite() {
        return Err(format!("price {p} is not a finite number"));
    }
    if p <= 0.0 {
        return Err(format!("price must be above zero, got {p}"));
    }
    if p > MAX_PRICE {
        return Err(format!("price {p} is above the highest accepted, $1,000,000"));
    }
    Ok(p)
}

fn parse_details(v: Option<&Value>) -> Result<Option<Map<String, Value>>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        // Curated files keep details as a JSON string.
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            _ => Err("details is a string but not a JSON object".into()),
        },
        Some(other) => Err(format!("details is not an object: {}", short(other))),
    }
}

fn string_list(obj: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("{key} holds a non-string: {}", short(other))),
            })
            .collect(),
        Some(other) => Err(format!("{key} is not a list: {}", short(other))),
    }
}

/// Streams CSV rows: `title` required, `price`, `description`, `category` optional.
pub struct CsvReader<R: Read> {
    rows: csv::StringRecordsIntoIter<R>,
    columns: Result<Columns, String>,
    reported_header: bool,
    prices: Prices,
    /// The line the last product read starts on.
    line: u64,
}

struct Columns {
    title: usize,
    price: Option<usize>,
    description: Option<usize>,
    category: Option<usize>,
}

impl<R: Read> CsvReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_delimiter(inner, b',')
    }

    /// A reader of a file separated by `delimiter` (`,`, `;`, tab).
    pub fn with_delimiter(inner: R, delimiter: u8) -> Self {
        let mut rdr = csv::ReaderBuilder::new().flexible(false).delimiter(delimiter).from_reader(inner);
        let columns = match rdr.headers() {
            Ok(h) => {
                let find = |name: &str| h.iter().position(|c| c.trim().eq_ignore_ascii_case(name));
                match find("title") {
                    Some(title) => Ok(Columns {
                        title,
                        price: find("price"),
                        description: find("description"),
                        category: find("category"),
                    }),
                    None => Err(format!(
                        "CSV header has no `title` column (read with {:?} between columns; `,`, `;` and tabs are tried)",
                        delimiter as char
                    )),
                }
            }
            Err(e) => Err(format!("cannot read CSV header: {e}")),
        };
        Self { rows: rdr.into_records(), columns, reported_header: false, prices: Prices::DecimalPoint, line: 0 }
    }
}

impl<R: Read> Iterator for CsvReader<R> {
    type Item = Result<Product, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        let cols = match &self.columns {
            Ok(c) => c,
            Err(reason) => {
                if self.reported_header {
                    return None;
                }
                self.reported_header = true;
                return Some(Err(RecordError { line: 1, reason: reason.clone() }));
            }
        };
        let row = self.rows.next()?;
        Some(match row {
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                let reason = match e.kind() {
                    csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        format!("expected {expected_len} fields, found {len}")
                    }
                    csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_string(),
                    _ => e.to_string(),
                };
                Err(RecordError { line, reason })
            }
            Ok(rec) => {
                let line = rec.position().map(|p| p.line()).unwrap_or(0);
                self.line = line;
                let get = |i: Option<usize>| i.and_then(|i| rec.get(i)).map(str::trim).unwrap_or("");
                let title = get(Some(cols.title));
                let price = parse_price_str_as(get(cols.price), self.prices);
                match (title.is_empty(), price) {
                    (true, _) => Err(RecordError { line, reason: "missing title".into() }),
                    (_, Err(reason)) => Err(RecordError { line, reason }),
                    (false, Ok(price)) => {
                        let desc = get(cols.description);
                        let cat = get(cols.category);
                        Ok(Product {
                            title: title.to_string(),
                            category: (!cat.is_empty()).then(|| cat.to_string()),
                            description: if desc.is_empty() { vec![] } else { vec![desc.to_string()] },
                            price,
                            format: Some(SourceFormat::Csv),
                            ..Product::default()
                        })
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(data: &'static [u8], format: Format) -> Vec<Result<Product, RecordError>> {
        read_products(data, format).unwrap().collect()
    }

    #[test]
    fn raw_amazon_record() {
        let line = br#"{"main_category": "Appliances", "title": "Ice Maker", "price": "None", "features": ["Fast", "Quiet"], "description": ["Makes ice."], "details": {"Brand": "Acme"}}"#;
        let got = read(line, Format::Jsonl);
        let p = got[0].as_ref().unwrap();
        assert_eq!(p.title, "Ice Maker");
        assert_eq!(p.category.as_deref(), Some("Appliances"));
        assert_eq!(p.price, None);
        assert_eq!(p.features, vec!["Fast", "Quiet"]);
        assert_eq!(p.detail("Brand").as_deref(), Some("Acme"));
        assert!(p.prepared_text.is_none());
    }

    #[test]
    fn prices_in_every_shape() {
        let v = |s: &str| parse_price(Some(&serde_json::from_str(s).unwrap()));
        assert_eq!(v("12.5"), Ok(Some(12.5)));
        assert_eq!(v("\"$1,299.00\""), Ok(Some(1299.0)));
        assert_eq!(v("null"), Ok(None));
        assert_eq!(v("\"None\""), Ok(None));
        assert!(v("\"cheap\"").unwrap_err().contains("not a number"));
        assert!(v("-3").unwrap_err().contains("above zero"));
        assert!(v("[1]").is_err());
    }

    #[test]
    fn csv_errors_name_their_physical_line_with_crlf_or_lf() {
        for eol in ["\n", "\r\n"] {
            let text = ["title,price", "Kettle,12.5", "Lamp,\"12,99\"", "Pen,oops", "Cup,3"].join(eol) + eol;
            let got: Vec<_> = read_products(std::io::Cursor::new(text.into_bytes()), Format::Csv).unwrap().collect();
            let lines: Vec<(u64, bool)> = got
                .iter()
                .map(|r| match r {
                    Ok(_) => (0, true),
                    Err(e) => (e.line, false),
                })
                .collect();
            assert_eq!(lines, [(0, true), (3, false), (4, false), (0, true)], "{eol:?}: {got:?}");
            assert_eq!(got[0].as_ref().unwrap().title, "Kettle", "no CR left in a field");
        }
        // A quoted field that spans lines moves the lines after it, as the file shows them.
        let got = read(b"title,price\r\n\"Two\r\nlines\",oops\r\nCup,3\r\n", Format::Csv);
        assert_eq!(got[0].as_ref().unwrap_err().line, 2);
        assert_eq!(got[1].as_ref().unwrap().title, "Cup");
    }

    #[test]
    fn every_record_carries_its_physical_line_in_file_order() {
        for eol in ["\n", "\r\n"] {
            let csv = ["title,price", "Kettle,12.5", "\"Two", "lines\",oops", "Cup,3"].join(eol) + eol;
            let jsonl = [r#"{"title":"Kettle"}"#, "", "{oops", r#"{"title":"Cup"}"#].join(eol) + eol;
            for (text, format, want) in [
                (csv, Format::Csv, [(2, true), (3, false), (5, true)]),
                (jsonl, Format::Jsonl, [(1, true), (3, false), (4, true)]),
            ] {
                let got: Vec<(u64, bool)> =
                    read_numbered_products_as(std::io::Cursor::new(text.into_bytes()), format, Prices::DecimalPoint)
                        .unwrap()
                        .map(|(line, r)| (line, r.is_ok()))
                        .collect();
                assert_eq!(got, want, "{format:?} {eol:?}");
            }
        }
    }

    #[test]
    fn semicolon_and_tab_files_are_read_by_their_separator() {
        for sep in [";", "\t"] {
            let text = format!("title{sep}price{sep}category\nKettle{sep}12.50{sep}Home\n");
            let got: Vec<_> = read_products(std::io::Cursor::new(text.into_bytes()), Format::Csv).unwrap().collect();
            let p = got[0].as_ref().unwrap();
            assert_eq!((p.title.as_str(), p.price), ("Kettle", Some(12.5)), "{sep:?}");
        }
        let got = read(b"name|price\nKettle|12\n", Format::Csv);
        let e = got[0].as_ref().unwrap_err();
        assert!(e.reason.contains("no `title` column") && e.reason.contains(";"), "{e}");
    }

    #[test]
    fn decimal_commas_are_read_when_asked() {
        let c = |s: &str| parse_price_str_as(s, Prices::DecimalComma);
        assert_eq!(c("12,99"), Ok(Some(12.99)));
        assert_eq!(c("1.299,00"), Ok(Some(1299.0)));
        assert_eq!(c("$ 7"), Ok(Some(7.0)));
        assert!(c("12.99").unwrap_err().contains("points may only separate thousands"));
        assert!(c("0,00").unwrap_err().contains("above zero"));
        let text = "title;price\nKettle;12,99\nLamp;1.299,50\n".to_string();
        let got: Vec<_> = read_products_as(std::io::Cursor::new(text.into_bytes()), Format::Csv, Prices::DecimalComma)
            .unwrap()
            .map(|r| r.unwrap().price)
            .collect();
        assert_eq!(got, [Some(12.99), Some(1299.5)]);
        let line = r#"{"title": "Kettle", "price": "12,99", "text": "Kettle\nSteel"}"#;
        assert_eq!(parse_json_record_as(line, Prices::DecimalComma).unwrap().price, Some(12.99));
        assert!(parse_json_record(line).unwrap_err().contains("--decimal-comma"));
    }

    #[test]
    fn one_price_grammar_refuses_zero_absurd_and_ambiguous_prices() {
        let t = parse_price_str;
        assert_eq!(t("$1,299.00"), Ok(Some(1299.0)));
        assert_eq!(t("1,299"), Ok(Some(1299.0)));
        assert_eq!(t("12,345,678.5"), Err("price 12345678.5 is above the highest accepted, $1,000,000".into()));
        assert_eq!(t(" $ 12.99 "), Ok(Some(12.99)));
        assert_eq!(t("1000000"), Ok(Some(1_000_000.0)));
        let e = t("12,99").unwrap_err();
        assert!(e.contains("decimal comma") && e.contains("\"12.99\""), "{e}");
        assert!(t("1.299,00").unwrap_err().contains("\"1299.00\""));
        assert!(t("1,2,3").is_err() && t("12,9999").is_err() && t(",99").is_err());
        assert!(t("0").unwrap_err().contains("above zero"));
        assert!(t("0.00").unwrap_err().contains("above zero"));
        assert!(t("1e308").unwrap_err().contains("highest accepted"));
        assert!(t("inf").unwrap_err().contains("not a finite"));
        assert!(t("-inf").unwrap_err().contains("not a finite"));
        let v = |s: &str| parse_price(Some(&serde_json::from_str(s).unwrap()));
        assert!(v("1e308").unwrap_err().contains("highest accepted"));
        assert!(v("0").unwrap_err().contains("above zero"));
        assert_eq!(t("nan"), Ok(None));
    }

    #[test]
    fn curated_record_keeps_prepared_text_and_parses_details_string() {
        let line = br#"{"title": "Cable", "category": "Musical_Instruments", "price": 47.95, "text": "Cable\nGold plugs", "details": "{\"Brand\": \"WBC\"}"}"#;
        let p = read(line, Format::Jsonl).remove(0).unwrap();
        assert_eq!(p.prepared_text.as_deref(), Some("Cable\nGold plugs"));
        assert_eq!(p.description, vec!["Gold plugs"]);
        assert_eq!(p.detail("Brand").as_deref(), Some("WBC"));
        assert_eq!(p.price, Some(47.95));
    }

    #[test]
    fn an_oversized_line_is_one_error_and_the_next_line_is_read_whole() {
        let mut data = vec![b'x'; MAX_LINE_BYTES + 100_000];
        data.extend_from_slice(b"\n{\"title\": \"Lamp\", \"price\": 12.5, \"text\": \"Lamp\\nBright\"}\n");
        let got: Vec<_> = read_products(std::io::Cursor::new(data), Format::Jsonl).unwrap().collect();
        assert_eq!(got.len(), 2);
        let e = got[0].as_ref().unwrap_err();
        assert_eq!((e.line, e.reason.as_str()), (1, "line longer than 16777216 bytes"));
        assert_eq!(got[1].as_ref().unwrap().title, "Lamp");
    }

    #[test]
    fn malformed_lines_are_reported_with_line_numbers_and_reading_goes_on() {
        let data: &[u8] = b"{\"title\": \"A\", \"price\": 1}\n\n{broken\n[1,2]\n{\"price\": 3}\n{\"title\": \"B\", \"price\": \"x\"}\n{\"title\": \"C\", \"features\": 5}\n\xff\xfe\n{\"title\": \"D\"}\n";
        let got = read(data, Format::Jsonl);
        let errs: Vec<(u64, String)> =
            got.iter().filter_map(|r| r.as_ref().err().map(|e| (e.line, e.reason.clone()))).collect();
        assert_eq!(errs.iter().map(|e| e.0).collect::<Vec<_>>(), vec![3, 4, 5, 6, 7, 8]);
        assert!(errs[0].1.contains("invalid JSON"));
        assert!(errs[1].1.contains("object"));
        assert!(errs[2].1.contains("missing title"));
        assert!(errs[3].1.contains("price"));
        assert!(errs[4].1.contains("features"));
        assert!(errs[5].1.contains("UTF-8"));
        let titles: Vec<_> = got.iter().filter_map(|r| r.as_ref().ok()).map(|p| p.title.clone()).collect();
        assert_eq!(titles, vec!["A", "D"]);
    }

    #[test]
    fn llm_summary_text_is_read_back_into_fields() {
        let line = br#"{"title": "Mini Air Duster", "category": null, "price": 79.0, "details": null, "format": "llm_summary", "text": "Title: Mini Air Duster  \nCategory: Electronics  \nBrand: Kica  \nDescription: Compact duster.\nStrong motor.  \nDetails: Four speed levels."}"#;
        let p = read(line, Format::Jsonl).remove(0).unwrap();
        assert_eq!(p.title, "Mini Air Duster");
        assert_eq!(p.category.as_deref(), Some("Electronics"));
        assert_eq!(p.detail("Brand").as_deref(), Some("Kica"));
        assert_eq!(p.description, vec!["Compact duster.\nStrong motor."]);
        assert_eq!(p.features, vec!["Four speed levels."]);
        assert_eq!(p.format, Some(SourceFormat::LlmSummary));
        assert!(p.prepared_text.is_none(), "prepared like a raw record");
        let line = br#"{"title": "Knob", "price": 6.0, "format": "llm_summary", "text": "Title: Knob\nCategory: Tools and Home Improvement\nWeight: 1.5 lbs\nSummary: A knob."}"#;
        let p = read(line, Format::Jsonl).remove(0).unwrap();
        assert_eq!(p.category.as_deref(), Some("Tools_and_Home_Improvement"));
        assert_eq!(p.detail("Item Weight").as_deref(), Some("1.5 lbs"));
        assert_eq!(p.description, vec!["A knob."]);
        let line = br#"{"title": "Knob", "price": 6.0, "format": "llm_summary", "text": "Title: Knob\nCategory: Home Hardware\nSummary: A knob."}"#;
        let p = read(line, Format::Jsonl).remove(0).unwrap();
        assert_eq!((p.category.as_deref(), p.detail("Category").as_deref()), (None, Some("Home Hardware")));
    }

    #[test]
    fn raw_fields_lists_become_entries() {
        let line = br#"{"title": "Strap", "price": 21.95, "format": "raw_fields", "text": "Title: Strap\n  Description: [\"Hand-crafted in America.\"]\n  Features: ['100% Polyester', 'It\\'s 2\" wide', \"Hook, eye\"]"}"#;
        let p = read(line, Format::Jsonl).remove(0).unwrap();
        assert_eq!(p.description, vec!["Hand-crafted in America."]);
        assert_eq!(p.features, vec!["100% Polyester", "It's 2\" wide", "Hook, eye"]);
        assert_eq!(p.format, Some(SourceFormat::RawFields));
        // Not a list after all: kept as written.
        assert_eq!(list_items("[Size]: 16 inches. [Material]: cloth"), vec!["[Size]: 16 inches. [Material]: cloth"]);
        assert_eq!(list_items("['unterminated"), vec!["['unterminated"]);
        assert_eq!(list_items("[]"), Vec::<String>::new());
    }

    #[test]
    fn curated_formats_and_unknown_ones() {
        let line = br#"{"title": "Pans", "price": 12, "text": "Pans\nFour pans", "format": "curated_scrubbed_title"}"#;
        let p = read(line, Format::Jsonl).remove(0).unwrap();
        assert_eq!(p.format, Some(SourceFormat::CuratedScrubbedTitle));
        assert_eq!(p.prepared_text.as_deref(), Some("Pans\nFour pans"));
        let line = br#"{"title": "Pans", "price": 12, "text": "Pans\nFour pans"}"#;
        assert_eq!(read(line, Format::Jsonl).remove(0).unwrap().format, Some(SourceFormat::Curated));
        let line = br#"{"title": "Pans", "price": 12, "text": "x", "format": "poem"}"#;
        let err = read(line, Format::Jsonl).remove(0).unwrap_err();
        assert!(err.reason.contains("unknown text format \"poem\"") && err.reason.contains("llm_summary"), "{err}");
        let line = br#"{"title": "Pans", "price": 12, "text": "x", "format": 3}"#;
        assert!(read(line, Format::Jsonl).remove(0).unwrap_err().reason.contains("format is not a string"));
    }

    #[test]
    fn gzip_is_detected_by_content() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"{\"title\": \"Zipped\", \"price\": 2}\n").unwrap();
        let bytes = enc.finish().unwrap();
        let got: Vec<_> = read_products(std::io::Cursor::new(bytes), Format::Jsonl).unwrap().collect();
        assert_eq!(got[0].as_ref().unwrap().title, "Zipped");
    }

    #[test]
    fn csv_rows_and_their_errors() {
        let data: &[u8] = b"Title,Price,Description,Category\nDrill,$49.99,\"18V, cordless\",Tools\n,5,x,y\nPick,abc,,\nStrap,,leather,\nBad,1,2\n";
        let got = read(data, Format::Csv);
        assert_eq!(got.len(), 5);
        let drill = got[0].as_ref().unwrap();
        assert_eq!((drill.title.as_str(), drill.price), ("Drill", Some(49.99)));
        assert_eq!(drill.description, vec!["18V, cordless"]);
        assert_eq!(got[1].as_ref().unwrap_err().line, 3);
        assert!(got[2].as_ref().unwrap_err().reason.contains("not a number"));
        assert_eq!(got[3].as_ref().unwrap().price, None);
        let e = got[4].as_ref().unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.reason.contains("expected 4 fields"), "{}", e.reason);
    }

    #[test]
    fn csv_without_title_column_is_one_clear_error() {
        let got = read(b"name,price\nx,1\n", Format::Csv);
        assert_eq!(got.len(), 1);
        assert!(got[0].as_ref().unwrap_err().reason.contains("title"));
    }

    #[test]
    fn format_from_name() {
        assert_eq!(Format::from_name("shop.CSV"), Format::Csv);
        assert_eq!(Format::from_name("x.csv.gz"), Format::Csv);
        assert_eq!(Format::from_name("meta_Appliances.jsonl.gz"), Format::Jsonl);
    }
}
