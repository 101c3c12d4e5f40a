//! Query-aware seeding: from a trigger's query and a row count N, the schema, table, columns and rows that make
//! that query return exactly N — and the rows to add so that it returns N + k.
//!
//! The query is parsed with `sqlparser` (PostgreSQL dialect) and read the way PostgreSQL reads it: unquoted
//! identifiers fold to lower case, quoted ones keep their case, names longer than 63 bytes are cut as
//! PostgreSQL cuts them. Supported: one `SELECT` of `COUNT(*)`, `COUNT(1)`, `COUNT(col)` or `SUM(col)` over one
//! (optionally schema-qualified, optionally aliased) table, with a `WHERE` of comparisons of a column with a
//! literal (`=`, `<>`, `!=`, `<`, `>`, `<=`, `>=`), `[NOT] IN (literals)`, `BETWEEN`, `IS [NOT] NULL`, joined by
//! `AND`. Anything else is refused with an error that quotes the query, names what is not supported and offers
//! `--seed-sql FILE` (`data.seed_sql` in scenario.yaml).
//!
//! This module only plans; `postgres::seed::SeededQuery` creates and fills the table through sqlx and then runs
//! the query itself (as the trigger's role) to check it returns N.
//!
//! How rows are chosen:
//! - Every column the query names gets the type its comparisons need: compared with a number, `integer`
//!   (`bigint`/`numeric` for literals that need them); with a string literal, `text COLLATE "C"` (so `<`/`>`
//!   order bytes, as this planner does); with `true`/`false`, `boolean`; `SUM(col)` is numeric. Columns are
//!   nullable (`IS NULL` needs that) and a matching row gives `COUNT(col)` a non-NULL value. A column
//!   `seed_row` (renamed when the query uses that name) numbers the rows, so a table is never column-less.
//! - Matching rows all carry one value per column that satisfies every condition (found by trying the literals
//!   of the query and values next to them).
//! - `SUM(col)`: N rows of `col = 1`, so that the value KEDA reads is the number of rows, as for `COUNT`, and
//!   adding k rows adds k. When the WHERE excludes 1 (`col > 10`), one row of `col = N` (and one of `k` for each
//!   addition), which the WHERE must then admit. For N = 0, one row of 0: `SUM` over no rows is NULL, not 0,
//!   and KEDA cannot read NULL.
//! - Rows that must not count (one per WHERE condition, each failing exactly that condition, and one with the
//!   counted column NULL for `COUNT(col)`/`SUM(col)`) are added once, so that the data shows the query filters.

use std::cmp::Ordering;
use std::fmt;

use sqlparser::ast::{
    BinaryOperator, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    Ident, InTarget, ObjectName, ObjectNamePart, Query, Select, SelectFlavor, SelectItem, SetExpr,
    Statement, TableFactor, UnaryOperator, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// A trigger's query longer than this is not one to plan (the customer's are a line or two); the cap also
/// bounds the depth of `a AND b AND ...` chains, which the parser builds as a tree one level per `AND`.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// Rows that must not count are one per WHERE condition, up to this many.
const MAX_DECOYS: usize = 32;

/// PostgreSQL's NAMEDATALEN - 1: longer identifiers are cut to this many bytes (at a character boundary).
const PG_MAX_IDENTIFIER_BYTES: usize = 63;

/// Numeric literals the planner computes with exactly: at most this many digits after the point, and an
/// absolute value below 10^20 (so two of them compare inside an i128).
const MAX_SCALE: u32 = 18;
const MAX_MANTISSA: i128 = 100_000_000_000_000_000_000;

/// What the planner seeds, said in every "not supported" error.
pub const SUPPORTED: &str = "one SELECT of COUNT(*), COUNT(col) or SUM(col) over one table (optionally \
    schema-qualified), with a WHERE of column-vs-literal comparisons (=, <>, <, >, <=, >=), IN (...), BETWEEN and \
    IS [NOT] NULL joined by AND";

/// The way out for any query the planner cannot seed.
pub const FIX: &str =
    "seed the data yourself: `--seed-sql FILE` (in scenario.yaml: `data.seed_sql: FILE`) runs \
    your SQL instead, and the harness then takes the query's own result as the row count";

/// Why a query cannot be planned. Every message quotes the query (escaped and cut short) and offers [`FIX`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedPlanError {
    #[error("the trigger's query {query} is {len} bytes, more than the {MAX_QUERY_BYTES} query-aware seeding reads; {FIX}")]
    TooLong { query: String, len: usize },
    #[error("the trigger's query {query} is not SQL that PostgreSQL would run: {message}; fix the query, or {FIX}")]
    Parse { query: String, message: String },
    #[error("the trigger's query {query} {what}; query-aware seeding supports {SUPPORTED}; {FIX}")]
    Unsupported { query: String, what: String },
    #[error("the trigger's query {query} cannot return {rows}: {why}; {FIX}")]
    Unsatisfiable {
        query: String,
        rows: u64,
        why: String,
    },
}

/// A query as an error shows it: escaped (quotes, newlines visible) and cut short.
fn shown(query: &str) -> String {
    const MAX: usize = 200;
    let cut: String = query.chars().take(MAX).collect();
    let mut out = format!("{cut:?}");
    if query.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// A fragment of the query (an expression) as an error names it.
fn fragment(e: &impl fmt::Display) -> String {
    let s = e.to_string();
    let cut: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        format!("`{cut}…`")
    } else {
        format!("`{cut}`")
    }
}

/// The column types the planner creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    Integer,
    BigInt,
    Numeric,
    /// `text COLLATE "C"`: byte order, the order this planner compares strings in.
    Text,
    Boolean,
}

impl SqlType {
    /// The type as written in `CREATE TABLE`.
    pub fn ddl(self) -> &'static str {
        match self {
            SqlType::Integer => "integer",
            SqlType::BigInt => "bigint",
            SqlType::Numeric => "numeric",
            SqlType::Text => "text COLLATE \"C\"",
            SqlType::Boolean => "boolean",
        }
    }

    /// The type a bound parameter is cast to.
    pub fn cast(self) -> &'static str {
        match self {
            SqlType::Text => "text",
            other => other.ddl(),
        }
    }
}

/// One column of the seeded table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPlan {
    /// The name as PostgreSQL stores it (folded, cut to 63 bytes); quote it with `seed::quote_ident`.
    pub name: String,
    pub sql_type: SqlType,
}

/// The table the query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    /// `public` when the query does not name one.
    pub schema: String,
    pub name: String,
    /// The row-number column (`bigint NOT NULL`), first in the table.
    pub row_number_column: String,
    /// The columns the query names, in the order it names them.
    pub columns: Vec<ColumnPlan>,
}

impl TablePlan {
    /// `schema.name` as a person reads it (unquoted).
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// An exact decimal: `mantissa / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    mantissa: i128,
    scale: u32,
}

impl Decimal {
    pub const fn from_int(n: i128) -> Self {
        Self {
            mantissa: n,
            scale: 0,
        }
    }

    fn new(mantissa: i128, scale: u32) -> Option<Self> {
        let mut d = Self { mantissa, scale };
        while d.scale > 0 && d.mantissa % 10 == 0 {
            d.mantissa /= 10;
            d.scale -= 1;
        }
        (d.scale <= MAX_SCALE && d.mantissa.abs() < MAX_MANTISSA).then_some(d)
    }

    /// PostgreSQL's numeric literal forms: `12`, `12.5`, `.5`, `1e3`, `1.5E-2`.
    fn parse(text: &str) -> Option<Self> {
        let (num, exp) = match text.find(['e', 'E']) {
            Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
            None => (text, 0),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 38 {
            return None;
        }
        let mut mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        let mut scale = i64::try_from(frac.len()).ok()? - i64::from(exp);
        while scale < 0 {
            mantissa = mantissa.checked_mul(10)?;
            scale += 1;
        }
        // Trailing zeros beyond MAX_SCALE (`1.50000000000000000000`) are still exact.
        while scale > i64::from(MAX_SCALE) && mantissa % 10 == 0 {
            mantissa /= 10;
            scale -= 1;
        }
        Self::new(mantissa, u32::try_from(scale).ok()?)
    }

    fn rescaled(self, scale: u32) -> Option<i128> {
        self.mantissa
            .checked_mul(10i128.checked_pow(scale.checked_sub(self.scale)?)?)
    }

    fn compare(self, other: Self) -> Ordering {
        let s = self.scale.max(other.scale);
        // Both scales are at most MAX_SCALE and both mantissas below MAX_MANTISSA: this cannot overflow.
        match (self.rescaled(s), other.rescaled(s)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => Ordering::Equal,
        }
    }

    fn checked_add(self, other: Self) -> Option<Self> {
        let s = self.scale.max(other.scale);
        Self::new(self.rescaled(s)?.checked_add(other.rescaled(s)?)?, s)
    }

    fn neg(self) -> Self {
        Self {
            mantissa: -self.mantissa,
            scale: self.scale,
        }
    }

    /// `(self + other) / 2`, exact (one more digit after the point).
    fn midpoint(self, other: Self) -> Option<Self> {
        let s = self.scale.max(other.scale);
        let sum = self.rescaled(s)?.checked_add(other.rescaled(s)?)?;
        Self::new(sum.checked_mul(5)?, s + 1)
    }

    fn integer(self) -> Option<i128> {
        (self.scale == 0).then_some(self.mantissa)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scale == 0 {
            return write!(f, "{}", self.mantissa);
        }
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let digits = format!(
            "{:0>width$}",
            self.mantissa.unsigned_abs(),
            width = self.scale as usize + 1
        );
        let (int, frac) = digits.split_at(digits.len() - self.scale as usize);
        write!(f, "{sign}{int}.{frac}")
    }
}

/// One value in a seeded row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Number(Decimal),
    Text(String),
    Bool(bool),
}

impl Cell {
    fn kind(&self) -> Option<Kind> {
        match self {
            Cell::Null => None,
            Cell::Number(_) => Some(Kind::Number),
            Cell::Text(_) => Some(Kind::Text),
            Cell::Bool(_) => Some(Kind::Bool),
        }
    }

    /// SQL's comparison: None when either side is NULL (or the kinds differ, which planning refuses).
    fn compare(&self, other: &Cell) -> Option<Ordering> {
        match (self, other) {
            (Cell::Number(a), Cell::Number(b)) => Some(a.compare(*b)),
            // Rust orders strings by their UTF-8 bytes, as COLLATE "C" does.
            (Cell::Text(a), Cell::Text(b)) => Some(a.cmp(b)),
            (Cell::Bool(a), Cell::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// Whether the value fits the column type (integers in range, no fractions in integer columns).
    fn fits(&self, ty: SqlType) -> bool {
        match (self, ty) {
            (Cell::Null, _) => true,
            (Cell::Number(d), SqlType::Integer) => {
                d.integer().is_some_and(|n| i32::try_from(n).is_ok())
            }
            (Cell::Number(d), SqlType::BigInt) => {
                d.integer().is_some_and(|n| i64::try_from(n).is_ok())
            }
            (Cell::Number(_), SqlType::Numeric) => true,
            (Cell::Text(_), SqlType::Text) => true,
            (Cell::Bool(_), SqlType::Boolean) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Null => f.write_str("NULL"),
            Cell::Number(d) => write!(f, "{d}"),
            Cell::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Cell::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    Text,
    Bool,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Number => "a number",
            Kind::Text => "a string",
            Kind::Bool => "a boolean",
        }
    }
}

/// `count` identical rows to insert (the row-number column numbers them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowBatch {
    /// One cell per entry of [`TablePlan::columns`].
    pub cells: Vec<Cell>,
    pub count: u64,
}

/// What the query's select list computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// `COUNT(*)`, or `COUNT(literal)`.
    CountRows,
    /// `COUNT(col)`: rows where the column (an index into [`TablePlan::columns`]) is not NULL.
    CountColumn(usize),
    /// `SUM(col)`.
    Sum(usize),
    /// `COUNT(NULL)`: always 0.
    CountNull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    NotEq,
    Lt,
    Gt,
    LtEq,
    GtEq,
}

impl CmpOp {
    fn flipped(self) -> Self {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::GtEq => CmpOp::LtEq,
            same => same,
        }
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::NotEq => ord != Ordering::Equal,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::LtEq => ord != Ordering::Greater,
            CmpOp::GtEq => ord != Ordering::Less,
        }
    }
}

/// One `AND`-ed condition of the WHERE, on one column.
#[derive(Debug, Clone)]
enum Condition {
    Compare(CmpOp, Cell),
    In { list: Vec<Cell>, negated: bool },
    Between(Cell, Cell),
    IsNull,
    IsNotNull,
}

impl Condition {
    /// SQL's three-valued result on `value`: None is unknown (a NULL took part), which a WHERE treats as false.
    fn eval(&self, value: &Cell) -> Option<bool> {
        match self {
            Condition::IsNull => Some(*value == Cell::Null),
            Condition::IsNotNull => Some(*value != Cell::Null),
            Condition::Compare(op, lit) => value.compare(lit).map(|o| op.holds(o)),
            Condition::Between(lo, hi) => {
                let a = value.compare(lo).map(|o| o != Ordering::Less);
                let b = value.compare(hi).map(|o| o != Ordering::Greater);
                match (a, b) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                }
            }
            Condition::In { list, negated } => {
                if *value == Cell::Null {
                    return None;
                }
                let found = list
                    .iter()
                    .any(|l| value.compare(l) == Some(Ordering::Equal));
                let has_null = list.contains(&Cell::Null);
                let r = if found {
                    Some(true)
                } else if has_null {
                    None
                } else {
                    Some(false)
                };
                if *negated {
                    r.map(|b| !b)
                } else {
                    r
                }
            }
        }
    }

    fn literals(&self) -> Vec<&Cell> {
        match self {
            Condition::Compare(_, l) => vec![l],
            Condition::In { list, .. } => list.iter().collect(),
            Condition::Between(a, b) => vec![a, b],
            Condition::IsNull | Condition::IsNotNull => vec![],
        }
    }
}

#[derive(Debug, Clone)]
struct ColumnCondition {
    column: usize,
    condition: Condition,
    /// The condition as the query wrote it, for messages.
    text: String,
}

/// How matching rows make up the value of the query.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Filling {
    /// The WHERE admits no row at all: only N = 0 can be seeded (the reason is kept for the error).
    Impossible(String),
    /// `count` copies of the matching row count `count` (COUNT, or SUM of rows of 1).
    Copies(Vec<Cell>),
    /// SUM whose column cannot be 1: one row per addition, whose summed column carries the amount.
    OneRowOf { row: Vec<Cell>, column: usize },
}

/// The plan for one query: the table to create, the rows that must not count, and how to make the query's
/// value N (and then N + k).
#[derive(Debug, Clone)]
pub struct SeedPlan {
    query: String,
    rows: u64,
    table: TablePlan,
    aggregate: Aggregate,
    conditions: Vec<ColumnCondition>,
    filling: Filling,
    decoys: Vec<Vec<Cell>>,
}

impl SeedPlan {
    /// Plan the data for `query` to return exactly `rows`.
    pub fn for_query(query: &str, rows: u64) -> Result<Self, SeedPlanError> {
        let plan = Planner::new(query).plan()?;
        // Fail now, not when KEDA is already polling, if N itself cannot be seeded.
        plan.batches_for_total(rows)?;
        Ok(Self { rows, ..plan })
    }

    /// The query as given.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The N the plan was made for (the initial value of the query).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn table(&self) -> &TablePlan {
        &self.table
    }

    pub fn aggregate(&self) -> Aggregate {
        self.aggregate
    }

    /// Schemas to create: the table's, unless it is `public`.
    pub fn schemas(&self) -> Vec<&str> {
        if self.table.schema == "public" {
            Vec::new()
        } else {
            vec![self.table.schema.as_str()]
        }
    }

    /// Rows that must not count: each fails one WHERE condition, or has the counted column NULL.
    pub fn decoy_rows(&self) -> Vec<RowBatch> {
        self.decoys
            .iter()
            .map(|cells| RowBatch {
                cells: cells.clone(),
                count: 1,
            })
            .collect()
    }

    /// The rows (besides the decoys) of a table for which the query returns `total`.
    pub fn batches_for_total(&self, total: u64) -> Result<Vec<RowBatch>, SeedPlanError> {
        if total == 0 {
            return match (&self.aggregate, &self.filling) {
                (Aggregate::Sum(col), Filling::Copies(row) | Filling::OneRowOf { row, .. }) => {
                    // SUM over no rows is NULL; one matching row of 0 makes it 0.
                    let mut row = row.clone();
                    row[*col] = Cell::Number(Decimal::from_int(0));
                    if !self.admits(&row) {
                        return Err(self.unsatisfiable(
                            0,
                            format!(
                                "SUM over no matching rows is NULL, not 0 (KEDA cannot read NULL), and the WHERE \
                                 does not admit a row with `{}` = 0",
                                self.table.columns[*col].name
                            ),
                        ));
                    }
                    Ok(vec![RowBatch {
                        cells: row,
                        count: 1,
                    }])
                }
                (Aggregate::Sum(_), Filling::Impossible(why)) => Err(self.unsatisfiable(
                    0,
                    format!("SUM over no matching rows is NULL, not 0 (KEDA cannot read NULL), and {why}"),
                )),
                _ => Ok(Vec::new()),
            };
        }
        self.batches_to_add(total).map_err(|e| match e {
            SeedPlanError::Unsatisfiable { query, why, .. } => SeedPlanError::Unsatisfiable {
                query,
                rows: total,
                why,
            },
            other => other,
        })
    }

    /// The rows to insert so that the query's value grows by `k` (0 for k = 0).
    pub fn batches_to_add(&self, k: u64) -> Result<Vec<RowBatch>, SeedPlanError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let k_dec = i128::from(k);
        match &self.filling {
            Filling::Impossible(why) => Err(self.unsatisfiable(k, why.clone())),
            Filling::Copies(row) => Ok(vec![RowBatch {
                cells: row.clone(),
                count: k,
            }]),
            Filling::OneRowOf { row, column } => {
                let mut row = row.clone();
                row[*column] = Cell::Number(Decimal::from_int(k_dec));
                let ty = self.table.columns[*column].sql_type;
                if !row[*column].fits(ty) || !self.admits(&row) {
                    return Err(self.unsatisfiable(
                        k,
                        format!(
                            "the WHERE does not admit `{0}` = 1, so SUM({0}) is made of one row per step, which \
                             must then be `{0}` = {k}, and the WHERE does not admit that either",
                            self.table.columns[*column].name
                        ),
                    ));
                }
                Ok(vec![RowBatch {
                    cells: row,
                    count: 1,
                }])
            }
        }
    }

    /// What the query computes on `rows` (each batch `count` times), by this planner's reading of it: the
    /// value PostgreSQL must return too (None: NULL).
    pub fn evaluate(&self, rows: &[RowBatch]) -> Option<Decimal> {
        let mut count: u64 = 0;
        let mut sum: Option<Decimal> = None;
        for b in rows.iter().filter(|b| self.admits(&b.cells)) {
            match self.aggregate {
                Aggregate::CountRows => count += b.count,
                Aggregate::CountNull => {}
                Aggregate::CountColumn(c) => {
                    if b.cells[c] != Cell::Null {
                        count += b.count
                    }
                }
                Aggregate::Sum(c) => {
                    if let Cell::Number(v) = &b.cells[c] {
                        let times = Decimal::from_int(i128::from(b.count));
                        let add = Decimal::new(v.mantissa.checked_mul(times.mantissa)?, v.scale)?;
                        sum = Some(match sum {
                            None => add,
                            Some(s) => s.checked_add(add)?,
                        });
                    }
                }
            }
        }
        match self.aggregate {
            Aggregate::Sum(_) => sum,
            _ => Some(Decimal::from_int(i128::from(count))),
        }
    }

    fn admits(&self, row: &[Cell]) -> bool {
        self.conditions
            .iter()
            .all(|c| c.condition.eval(&row[c.column]) == Some(true))
    }

    fn unsatisfiable(&self, rows: u64, why: String) -> SeedPlanError {
        SeedPlanError::Unsatisfiable {
            query: shown(&self.query),
            rows,
            why,
        }
    }
}

/// A column the query names, as PostgreSQL reads it.
fn folded(ident: &Ident) -> Result<String, String> {
    let name = match ident.quote_style {
        None => ident.value.to_ascii_lowercase(),
        Some('"') => ident.value.clone(),
        Some(q) => {
            return Err(format!(
                "quotes an identifier with {q:?}, which PostgreSQL does not"
            ))
        }
    };
    if name.is_empty() {
        return Err("has an empty quoted identifier (\"\"), which PostgreSQL refuses".into());
    }
    if name.contains('\0') {
        return Err("has a NUL character in an identifier".into());
    }
    let mut cut = name.len().min(PG_MAX_IDENTIFIER_BYTES);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    Ok(name[..cut].to_string())
}

struct Planner<'q> {
    query: &'q str,
    schema: String,
    table: String,
    alias: Option<String>,
    columns: Vec<(String, Option<Kind>)>,
}

impl<'q> Planner<'q> {
    fn new(query: &'q str) -> Self {
        Self {
            query,
            schema: String::new(),
            table: String::new(),
            alias: None,
            columns: Vec::new(),
        }
    }

    fn unsupported(&self, what: impl Into<String>) -> SeedPlanError {
        SeedPlanError::Unsupported {
            query: shown(self.query),
            what: what.into(),
        }
    }

    fn parse_error(&self, message: impl Into<String>) -> SeedPlanError {
        SeedPlanError::Parse {
            query: shown(self.query),
            message: message.into(),
        }
    }

    fn plan(mut self) -> Result<SeedPlan, SeedPlanError> {
        if self.query.len() > MAX_QUERY_BYTES {
            return Err(SeedPlanError::TooLong {
                query: shown(self.query),
                len: self.query.len(),
            });
        }
        if self.query.contains('\0') {
            return Err(self.parse_error("it contains a NUL character"));
        }
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, self.query)
            .map_err(|e| self.parse_error(e.to_string()))?;
        let query = match statements.as_slice() {
            [] => return Err(self.parse_error("it is empty")),
            [Statement::Query(q)] => q,
            [other] => {
                let verb = other.to_string();
                let verb = verb.split_whitespace().next().unwrap_or_default();
                return Err(self.unsupported(format!(
                    "is a `{verb}` statement, not a SELECT (KEDA reads the first column of the first row a SELECT returns)"
                )));
            }
            many => {
                return Err(self.unsupported(format!(
                    "holds {} statements; KEDA runs one query (pgx refuses several in one), so give one SELECT",
                    many.len()
                )))
            }
        };
        let select = self.select_of(query)?;
        self.table_of(select)?;
        let aggregate = self.aggregate_of(select)?;
        let conditions = match &select.selection {
            None => Vec::new(),
            Some(e) => self.conditions_of(e)?,
        };
        self.finish(aggregate, conditions)
    }

    fn select_of<'a>(&self, q: &'a Query) -> Result<&'a Select, SeedPlanError> {
        let clause = |present: bool, what: &str| {
            if present {
                Err(self.unsupported(format!("uses {what}")))
            } else {
                Ok(())
            }
        };
        clause(q.with.is_some(), "a WITH clause")?;
        clause(q.order_by.is_some(), "ORDER BY")?;
        clause(q.limit_clause.is_some(), "LIMIT/OFFSET")?;
        clause(q.fetch.is_some(), "FETCH")?;
        clause(!q.locks.is_empty(), "a locking clause (FOR UPDATE ...)")?;
        clause(q.for_clause.is_some(), "a FOR clause")?;
        clause(q.settings.is_some(), "SETTINGS")?;
        clause(q.format_clause.is_some(), "FORMAT")?;
        clause(!q.pipe_operators.is_empty(), "pipe operators")?;
        let s = match q.body.as_ref() {
            SetExpr::Select(s) => s,
            SetExpr::SetOperation { op, .. } => {
                return Err(self.unsupported(format!("combines queries with {op}")))
            }
            SetExpr::Query(_) => {
                return Err(self.unsupported(
                    "is a parenthesised query; write the SELECT without the parentheses",
                ))
            }
            other => {
                return Err(self.unsupported(format!("is {} rather than a SELECT", fragment(other))))
            }
        };
        clause(s.flavor != SelectFlavor::Standard, "FROM-first syntax")?;
        clause(s.distinct.is_some(), "DISTINCT")?;
        clause(s.top.is_some(), "TOP")?;
        clause(s.into.is_some(), "SELECT INTO (which creates a table)")?;
        clause(s.exclude.is_some(), "EXCLUDE")?;
        clause(s.select_modifiers.is_some(), "SELECT modifiers")?;
        clause(!s.optimizer_hints.is_empty(), "optimizer hints")?;
        clause(!s.lateral_views.is_empty(), "LATERAL VIEW")?;
        clause(s.prewhere.is_some(), "PREWHERE")?;
        clause(!s.connect_by.is_empty(), "CONNECT BY")?;
        let grouped = match &s.group_by {
            GroupByExpr::All(_) => true,
            GroupByExpr::Expressions(e, m) => !e.is_empty() || !m.is_empty(),
        };
        clause(grouped, "GROUP BY")?;
        clause(
            !s.cluster_by.is_empty() || !s.distribute_by.is_empty() || !s.sort_by.is_empty(),
            "CLUSTER/DISTRIBUTE/SORT BY",
        )?;
        clause(s.having.is_some(), "HAVING")?;
        clause(!s.named_window.is_empty(), "WINDOW")?;
        clause(s.qualify.is_some(), "QUALIFY")?;
        clause(s.value_table_mode.is_some(), "SELECT AS VALUE/STRUCT")?;
        Ok(s)
    }

    fn table_of(&mut self, s: &Select) -> Result<(), SeedPlanError> {
        let from = match s.from.as_slice() {
            [] => return Err(self.unsupported("reads no table (no FROM)")),
            [one] => one,
            [_, ..] => return Err(self.unsupported("reads several tables (`FROM a, b` is a join)")),
        };
        if let Some(j) = from.joins.first() {
            return Err(self.unsupported(format!("uses a JOIN ({})", fragment(j))));
        }
        let TableFactor::Table {
            name,
            alias,
            args,
            with_hints,
            version,
            with_ordinality,
            partitions,
            json_path,
            sample,
            index_directives,
            inheritance: _,
        } = &from.relation
        else {
            let what = match &from.relation {
                TableFactor::Derived { .. } => "reads from a subquery".to_string(),
                other => format!("reads from {}", fragment(other)),
            };
            return Err(self.unsupported(what));
        };
        if args.is_some() {
            return Err(self.unsupported("reads from a table function"));
        }
        if !with_hints.is_empty()
            || version.is_some()
            || *with_ordinality
            || !partitions.is_empty()
            || json_path.is_some()
            || sample.is_some()
            || !index_directives.is_empty()
        {
            return Err(self.unsupported(format!(
                "reads {} with options beyond a name and an alias",
                fragment(&from.relation)
            )));
        }
        let parts = self.name_parts(name)?;
        match parts.as_slice() {
            [t] => {
                self.schema = "public".into();
                self.table = t.clone();
            }
            [s, t] => {
                self.schema = s.clone();
                self.table = t.clone();
            }
            _ => {
                return Err(self.unsupported(format!(
                    "names the table {} with {} parts; write `table` or `schema.table` (the database is the \
                     trigger's dbName)",
                    fragment(name),
                    parts.len()
                )))
            }
        }
        if let Some(a) = alias {
            if !a.columns.is_empty() {
                return Err(self.unsupported("renames the table's columns in its alias"));
            }
            self.alias = Some(folded(&a.name).map_err(|m| self.parse_error(m))?);
        }
        Ok(())
    }

    fn name_parts(&self, name: &ObjectName) -> Result<Vec<String>, SeedPlanError> {
        name.0
            .iter()
            .map(|p| match p {
                ObjectNamePart::Identifier(i) => folded(i).map_err(|m| self.parse_error(m)),
                other => Err(self.unsupported(format!("names a table with {}", fragment(other)))),
            })
            .collect()
    }

    /// The index of the column `e` names (added on first use), or an error when `e` is not a column of the table.
    fn column_of(&mut self, e: &Expr) -> Result<Option<usize>, SeedPlanError> {
        let parts: Vec<&Ident> = match e {
            Expr::Identifier(i) => vec![i],
            Expr::CompoundIdentifier(parts) => parts.iter().collect(),
            Expr::Nested(inner) => return self.column_of(inner),
            _ => return Ok(None),
        };
        let names = parts
            .iter()
            .map(|i| folded(i).map_err(|m| self.parse_error(m)))
            .collect::<Result<Vec<_>, _>>()?;
        let (qualifier, column) = names.split_at(names.len() - 1);
        let ok = match (qualifier, &self.alias) {
            ([], _) => true,
            // With an alias, PostgreSQL only knows the table by it ("invalid reference to FROM-clause entry").
            ([q], Some(a)) => q == a,
            ([t], None) => *t == self.table,
            ([s, t], None) => *s == self.schema && *t == self.table,
            _ => false,
        };
        if !ok {
            return Err(self.unsupported(format!(
                "names the column {}, which is not one of the query's table ({}{})",
                fragment(e),
                self.table,
                self.alias
                    .as_ref()
                    .map(|a| format!(", known as `{a}` in this query"))
                    .unwrap_or_default()
            )));
        }
        let name = column[0].clone();
        let at = match self.columns.iter().position(|(n, _)| *n == name) {
            Some(at) => at,
            None => {
                self.columns.push((name, None));
                self.columns.len() - 1
            }
        };
        Ok(Some(at))
    }

    fn aggregate_of(&mut self, s: &Select) -> Result<Aggregate, SeedPlanError> {
        let expr = match s.projection.as_slice() {
            [SelectItem::UnnamedExpr(e)] | [SelectItem::ExprWithAlias { expr: e, .. }] => e,
            [one] => {
                return Err(self.unsupported(format!(
                    "selects {}; KEDA reads one number, so select one COUNT or SUM",
                    fragment(one)
                )))
            }
            many => {
                return Err(self.unsupported(format!(
                    "selects {} columns; KEDA reads the first one only, so select one COUNT or SUM",
                    many.len()
                )))
            }
        };
        let Expr::Function(f) = expr else {
            return Err(self.unsupported(format!(
                "selects {}, not COUNT(...) or SUM(...)",
                fragment(expr)
            )));
        };
        let name = self.function_name(f)?;
        let arg = self.single_argument(f, &name)?;
        match (name.as_str(), arg) {
            ("count", FunctionArgExpr::Wildcard) => Ok(Aggregate::CountRows),
            ("count" | "sum", FunctionArgExpr::Expr(e)) => {
                if let Some(col) = self.column_of(e)? {
                    if name == "sum" {
                        self.set_kind(col, Kind::Number, e)?;
                        return Ok(Aggregate::Sum(col));
                    }
                    return Ok(Aggregate::CountColumn(col));
                }
                match (name.as_str(), literal(e)) {
                    ("count", Some(Ok(Cell::Null))) => Ok(Aggregate::CountNull),
                    ("count", Some(Ok(_))) => Ok(Aggregate::CountRows),
                    _ => Err(self.unsupported(format!(
                        "takes {}({}); query-aware seeding sums or counts a column",
                        name.to_uppercase(),
                        fragment(e)
                    ))),
                }
            }
            (_, other) => Err(self.unsupported(format!(
                "takes {}({})",
                name.to_uppercase(),
                fragment(other)
            ))),
        }
    }

    fn function_name(&self, f: &Function) -> Result<String, SeedPlanError> {
        let parts = self.name_parts(&f.name)?;
        let name = match parts.as_slice() {
            [n] => n.clone(),
            _ => String::new(),
        };
        if name != "count" && name != "sum" {
            return Err(self.unsupported(format!(
                "selects the function {} (only COUNT and SUM are seeded)",
                fragment(&f.name)
            )));
        }
        let extras = [
            (f.filter.is_some(), "FILTER"),
            (f.over.is_some(), "OVER (a window)"),
            (!f.within_group.is_empty(), "WITHIN GROUP"),
            (f.null_treatment.is_some(), "IGNORE/RESPECT NULLS"),
            (
                !matches!(f.parameters, FunctionArguments::None),
                "parameters",
            ),
            (f.uses_odbc_syntax, "ODBC syntax"),
        ];
        if let Some((_, what)) = extras.iter().find(|(on, _)| *on) {
            return Err(self.unsupported(format!("uses {what} on {}", name.to_uppercase())));
        }
        Ok(name)
    }

    fn single_argument<'a>(
        &self,
        f: &'a Function,
        name: &str,
    ) -> Result<&'a FunctionArgExpr, SeedPlanError> {
        let FunctionArguments::List(list) = &f.args else {
            return Err(self.unsupported(format!(
                "calls {} without an argument list",
                name.to_uppercase()
            )));
        };
        if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
            return Err(self.unsupported(format!(
                "uses {} (DISTINCT, ORDER BY ... inside the call)",
                fragment(f)
            )));
        }
        match list.args.as_slice() {
            [FunctionArg::Unnamed(a)] => Ok(a),
            _ => Err(self.unsupported(format!(
                "calls {} with other than one argument",
                fragment(f)
            ))),
        }
    }

    fn set_kind(&mut self, col: usize, kind: Kind, at: &Expr) -> Result<(), SeedPlanError> {
        match self.columns[col].1 {
            None => {
                self.columns[col].1 = Some(kind);
                Ok(())
            }
            Some(k) if k == kind => Ok(()),
            Some(k) => Err(self.unsupported(format!(
                "uses the column `{}` as {} and as {} (at {}), which PostgreSQL refuses for one column",
                self.columns[col].0,
                k.name(),
                kind.name(),
                fragment(at)
            ))),
        }
    }

    /// The AND-ed conditions of a WHERE. Iterative: a long `a AND b AND ...` is a deep tree.
    fn conditions_of(&mut self, root: &Expr) -> Result<Vec<ColumnCondition>, SeedPlanError> {
        let mut out = Vec::new();
        let mut stack = vec![root];
        while let Some(e) = stack.pop() {
            match e {
                Expr::BinaryOp {
                    left,
                    op: BinaryOperator::And,
                    right,
                } => {
                    stack.push(right);
                    stack.push(left);
                }
                Expr::Nested(inner) => stack.push(inner),
                leaf => out.push(self.condition_of(leaf)?),
            }
        }
        Ok(out)
    }

    fn condition_of(&mut self, e: &Expr) -> Result<ColumnCondition, SeedPlanError> {
        let text = e.to_string();
        let literal_of = |p: &Planner, x: &Expr| -> Result<Cell, SeedPlanError> {
            match literal(x) {
                Some(Ok(c)) => Ok(c),
                Some(Err(m)) => Err(p.unsupported(format!("compares with {}: {m}", fragment(x)))),
                None => Err(p.unsupported(format!(
                    "compares with {}, which is not a literal (numbers, 'strings', true/false)",
                    fragment(x)
                ))),
            }
        };
        let (column, condition) = match e {
            Expr::BinaryOp { left, op, right } => {
                let op = match op {
                    BinaryOperator::Eq => CmpOp::Eq,
                    BinaryOperator::NotEq => CmpOp::NotEq,
                    BinaryOperator::Lt => CmpOp::Lt,
                    BinaryOperator::Gt => CmpOp::Gt,
                    BinaryOperator::LtEq => CmpOp::LtEq,
                    BinaryOperator::GtEq => CmpOp::GtEq,
                    BinaryOperator::Or => {
                        return Err(self.unsupported(format!("uses OR ({})", fragment(e))))
                    }
                    other => {
                        return Err(self
                            .unsupported(format!("uses the operator {other} ({})", fragment(e))))
                    }
                };
                match (self.column_of(left)?, self.column_of(right)?) {
                    (Some(_), Some(_)) => {
                        return Err(
                            self.unsupported(format!("compares two columns ({})", fragment(e)))
                        )
                    }
                    (Some(c), None) => (c, Condition::Compare(op, literal_of(self, right)?)),
                    (None, Some(c)) => {
                        (c, Condition::Compare(op.flipped(), literal_of(self, left)?))
                    }
                    (None, None) => {
                        return Err(self.unsupported(format!(
                            "has a condition on no column ({})",
                            fragment(e)
                        )))
                    }
                }
            }
            Expr::In {
                expr,
                target: InTarget::List(list),
                negated,
                global: false,
            } => {
                let Some(c) = self.column_of(expr)? else {
                    return Err(self.unsupported(format!(
                        "tests {} IN (...), which is not a column",
                        fragment(expr)
                    )));
                };
                let list = list
                    .iter()
                    .map(|x| literal_of(self, x))
                    .collect::<Result<Vec<_>, _>>()?;
                (
                    c,
                    Condition::In {
                        list,
                        negated: *negated,
                    },
                )
            }
            Expr::In { .. } | Expr::Exists { .. } | Expr::Subquery(_) => {
                return Err(self.unsupported(format!("uses a subquery ({})", fragment(e))))
            }
            Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } => {
                let Some(c) = self.column_of(expr)? else {
                    return Err(self.unsupported(format!(
                        "tests {} BETWEEN ..., which is not a column",
                        fragment(expr)
                    )));
                };
                (
                    c,
                    Condition::Between(literal_of(self, low)?, literal_of(self, high)?),
                )
            }
            Expr::IsNull(x) | Expr::IsNotNull(x) => {
                let Some(c) = self.column_of(x)? else {
                    return Err(
                        self.unsupported(format!("tests {}, which is not a column", fragment(e)))
                    );
                };
                let cond = if matches!(e, Expr::IsNull(_)) {
                    Condition::IsNull
                } else {
                    Condition::IsNotNull
                };
                (c, cond)
            }
            Expr::Like { .. } | Expr::ILike { .. } | Expr::SimilarTo { .. } => {
                return Err(self.unsupported(format!("uses LIKE ({})", fragment(e))))
            }
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                ..
            } => return Err(self.unsupported(format!("uses NOT ({})", fragment(e)))),
            Expr::Function(f) => {
                return Err(self.unsupported(format!(
                    "calls the function {} in the WHERE",
                    fragment(&f.name)
                )))
            }
            other => return Err(self.unsupported(format!("has the condition {}", fragment(other)))),
        };
        for lit in condition.literals() {
            if let Some(k) = lit.kind() {
                self.set_kind(column, k, e)?;
            }
        }
        Ok(ColumnCondition {
            column,
            condition,
            text,
        })
    }

    fn finish(
        self,
        aggregate: Aggregate,
        conditions: Vec<ColumnCondition>,
    ) -> Result<SeedPlan, SeedPlanError> {
        let mut row_number_column = "seed_row".to_string();
        while self.columns.iter().any(|(n, _)| *n == row_number_column) {
            row_number_column.push('_');
        }
        let columns: Vec<ColumnPlan> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (name, kind))| ColumnPlan {
                name: name.clone(),
                sql_type: column_type(*kind, conditions.iter().filter(|c| c.column == i)),
            })
            .collect();
        let table = TablePlan {
            schema: self.schema.clone(),
            name: self.table.clone(),
            row_number_column,
            columns,
        };
        let mut plan = SeedPlan {
            query: self.query.to_string(),
            rows: 0,
            table,
            aggregate,
            conditions,
            filling: Filling::Impossible(String::new()),
            decoys: Vec::new(),
        };
        plan.filling = plan.filling();
        plan.decoys = plan.decoys();
        Ok(plan)
    }
}

fn column_type<'a>(
    kind: Option<Kind>,
    conditions: impl Iterator<Item = &'a ColumnCondition>,
) -> SqlType {
    match kind {
        Some(Kind::Text) | None => SqlType::Text,
        Some(Kind::Bool) => SqlType::Boolean,
        Some(Kind::Number) => {
            let mut ty = SqlType::Integer;
            for c in conditions {
                for lit in c.condition.literals() {
                    if let Cell::Number(d) = lit {
                        let needed = match d.integer() {
                            Some(n) if i32::try_from(n).is_ok() => SqlType::Integer,
                            Some(n) if i64::try_from(n).is_ok() => SqlType::BigInt,
                            _ => SqlType::Numeric,
                        };
                        ty = match (ty, needed) {
                            (SqlType::Numeric, _) | (_, SqlType::Numeric) => SqlType::Numeric,
                            (SqlType::BigInt, _) | (_, SqlType::BigInt) => SqlType::BigInt,
                            _ => SqlType::Integer,
                        };
                    }
                }
            }
            ty
        }
    }
}

/// A literal of the query as a cell: Some(Err) for a literal the planner does not take, None for a non-literal.
fn literal(e: &Expr) -> Option<Result<Cell, String>> {
    match e {
        Expr::Nested(inner) => literal(inner),
        Expr::UnaryOp {
            op: op @ (UnaryOperator::Minus | UnaryOperator::Plus),
            expr,
        } => match literal(expr)? {
            Ok(Cell::Number(d)) => Some(Ok(Cell::Number(if *op == UnaryOperator::Minus {
                d.neg()
            } else {
                d
            }))),
            Ok(_) => Some(Err("a sign before a non-number".into())),
            Err(m) => Some(Err(m)),
        },
        Expr::Value(v) => Some(match &v.value {
            Value::Number(n, _) => Decimal::parse(n).map(Cell::Number).ok_or_else(|| {
                format!(
                    "the number has more digits than seeding computes with exactly (at most {MAX_SCALE} after the \
                     point, below 10^20)"
                )
            }),
            Value::SingleQuotedString(s) => Ok(Cell::Text(s.clone())),
            Value::Boolean(b) => Ok(Cell::Bool(*b)),
            Value::Null => Ok(Cell::Null),
            other => Err(format!(
                "{} literals are not seeded (write 'plain strings' or numbers)",
                fragment(other)
            )),
        }),
        _ => None,
    }
}

impl SeedPlan {
    /// Candidate values of one column: the literals the query compares it with and values just beside them,
    /// then plain defaults. Every candidate fits the column's type.
    fn candidates(&self, column: usize) -> Vec<Cell> {
        let ty = self.table.columns[column].sql_type;
        let lits: Vec<&Cell> = self
            .conditions
            .iter()
            .filter(|c| c.column == column)
            .flat_map(|c| c.condition.literals())
            .collect();
        let mut out: Vec<Cell> = Vec::new();
        match ty {
            SqlType::Text => {
                out.push(Cell::Text("seed".into()));
                for l in &lits {
                    if let Cell::Text(s) = l {
                        out.push(Cell::Text(s.clone()));
                        for suffix in ["a", " ", "\u{1}"] {
                            out.push(Cell::Text(format!("{s}{suffix}")));
                        }
                        let mut shorter = s.clone();
                        shorter.pop();
                        out.push(Cell::Text(shorter));
                    }
                }
                out.push(Cell::Text(String::new()));
            }
            SqlType::Boolean => {
                out.push(Cell::Bool(true));
                out.push(Cell::Bool(false));
            }
            SqlType::Integer | SqlType::BigInt | SqlType::Numeric => {
                let nums: Vec<Decimal> = lits
                    .iter()
                    .filter_map(|l| match l {
                        Cell::Number(d) => Some(*d),
                        _ => None,
                    })
                    .collect();
                out.push(Cell::Number(Decimal::from_int(1)));
                let one = Decimal::from_int(1);
                for d in &nums {
                    out.push(Cell::Number(*d));
                    for step in [one, one.neg()] {
                        if let Some(x) = d.checked_add(step) {
                            out.push(Cell::Number(x));
                        }
                    }
                    if ty == SqlType::Numeric {
                        if let Some(x) = Decimal::new(5, 1).and_then(|h| d.checked_add(h)) {
                            out.push(Cell::Number(x));
                        }
                    }
                }
                if ty == SqlType::Numeric {
                    for (i, a) in nums.iter().enumerate() {
                        for b in nums.iter().skip(i + 1).take(64) {
                            if let Some(m) = a.midpoint(*b) {
                                out.push(Cell::Number(m));
                            }
                        }
                    }
                }
                out.push(Cell::Number(Decimal::from_int(0)));
            }
        }
        out.retain(|c| c.fits(ty));
        out
    }

    /// The conditions on `column`.
    fn conditions_on(&self, column: usize) -> impl Iterator<Item = &ColumnCondition> {
        self.conditions.iter().filter(move |c| c.column == column)
    }

    /// A value for `column` that every condition on it admits (NULL only when one asks for IS NULL and
    /// `non_null` is false).
    fn value_for(&self, column: usize, non_null: bool) -> Result<Cell, String> {
        let conds: Vec<&ColumnCondition> = self.conditions_on(column).collect();
        let admits = |v: &Cell| conds.iter().all(|c| c.condition.eval(v) == Some(true));
        let name = &self.table.columns[column].name;
        if conds
            .iter()
            .any(|c| matches!(c.condition, Condition::IsNull))
        {
            if non_null {
                return Err(format!(
                    "the WHERE asks for `{name}` IS NULL, and {} counts only rows where it is not NULL",
                    match self.aggregate {
                        Aggregate::Sum(_) => "SUM",
                        _ => "COUNT",
                    }
                ));
            }
            if admits(&Cell::Null) {
                return Ok(Cell::Null);
            }
            let others: Vec<&str> = conds
                .iter()
                .filter(|c| !matches!(c.condition, Condition::IsNull))
                .map(|c| c.text.as_str())
                .collect();
            return Err(format!(
                "the WHERE asks for `{name}` IS NULL and also `{}`, which no NULL satisfies",
                others.join(" AND ")
            ));
        }
        if let Some(c) = self.candidates(column).into_iter().find(|v| admits(v)) {
            return Ok(c);
        }
        let texts: Vec<&str> = conds.iter().map(|c| c.text.as_str()).collect();
        Err(format!(
            "the harness found no value of `{name}` that satisfies `{}` (a comparison with NULL is never true)",
            texts.join(" AND ")
        ))
    }

    fn filling(&self) -> Filling {
        let counted = match self.aggregate {
            Aggregate::CountColumn(c) | Aggregate::Sum(c) => Some(c),
            _ => None,
        };
        let mut row = Vec::with_capacity(self.table.columns.len());
        for i in 0..self.table.columns.len() {
            match self.value_for(i, Some(i) == counted) {
                Ok(v) => row.push(v),
                Err(why) => return Filling::Impossible(why),
            }
        }
        match self.aggregate {
            Aggregate::CountNull => {
                Filling::Impossible("COUNT(NULL) counts no row: it is always 0".into())
            }
            Aggregate::Sum(c) => {
                let mut unit = row.clone();
                unit[c] = Cell::Number(Decimal::from_int(1));
                if self.admits(&unit) {
                    Filling::Copies(unit)
                } else {
                    Filling::OneRowOf { row, column: c }
                }
            }
            _ => Filling::Copies(row),
        }
    }

    /// Rows that must not count: for each condition, the matching row with that condition's column set to a
    /// value the condition refuses; for COUNT(col)/SUM(col), the matching row with that column NULL.
    fn decoys(&self) -> Vec<Vec<Cell>> {
        let base = match &self.filling {
            Filling::Copies(row) | Filling::OneRowOf { row, .. } => row.clone(),
            Filling::Impossible(_) => return Vec::new(),
        };
        let mut out: Vec<Vec<Cell>> = Vec::new();
        for cond in self.conditions.iter().take(MAX_DECOYS) {
            let refuses = |v: &Cell| cond.condition.eval(v) != Some(true);
            let mut candidates = self.candidates(cond.column);
            candidates.push(Cell::Null);
            if let Some(v) = candidates.into_iter().find(|v| refuses(v)) {
                let mut row = base.clone();
                row[cond.column] = v;
                out.push(row);
            }
        }
        if let Aggregate::CountColumn(c) | Aggregate::Sum(c) = self.aggregate {
            let mut row = base.clone();
            row[c] = Cell::Null;
            out.push(row);
        }
        out.dedup();
        // By construction none is admitted with a counted value; keep the guarantee explicit.
        out.retain(|r| {
            let counted = match self.aggregate {
                Aggregate::CountColumn(c) | Aggregate::Sum(c) => r[c] != Cell::Null,
                _ => true,
            };
            !(self.admits(r) && counted)
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(plan: &SeedPlan, n: u64) -> Option<Decimal> {
        let mut rows = plan.decoy_rows();
        rows.extend(plan.batches_for_total(n).unwrap());
        plan.evaluate(&rows)
    }

    #[test]
    fn decimals_parse_compare_and_print_exactly() {
        let d = |s| Decimal::parse(s).unwrap();
        assert_eq!(d("10").to_string(), "10");
        assert_eq!(d("10.50").to_string(), "10.5");
        assert_eq!(d(".5").to_string(), "0.5");
        assert_eq!(d("1e3").to_string(), "1000");
        assert_eq!(d("1.5E-2").to_string(), "0.015");
        assert_eq!(d("0.5").neg().to_string(), "-0.5");
        assert_eq!(d("10").compare(d("9.999")), Ordering::Greater);
        assert_eq!(d("1").midpoint(d("1.1")).unwrap().to_string(), "1.05");
        assert!(Decimal::parse("1e400").is_none());
        assert!(Decimal::parse("123456789012345678901234567890").is_none());
        assert!(Decimal::parse("abc").is_none());
    }

    #[test]
    fn the_seed_scenario_query_counts_one_table() {
        let p = SeedPlan::for_query("SELECT COUNT(*) FROM movies", 3).unwrap();
        assert_eq!(p.table().display_name(), "public.movies");
        assert!(p.table().columns.is_empty());
        assert!(p.schemas().is_empty());
        assert_eq!(total(&p, 3), Some(Decimal::from_int(3)));
    }

    #[test]
    fn the_customers_query_gets_a_schema_typed_columns_and_rows_that_do_not_match() {
        let q = "SELECT COUNT(*) FROM sales.orders WHERE status = 'pending' AND amount > 10";
        let p = SeedPlan::for_query(q, 4).unwrap();
        assert_eq!(p.schemas(), vec!["sales"]);
        let cols: Vec<(&str, SqlType)> = p
            .table()
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.sql_type))
            .collect();
        assert_eq!(
            cols,
            vec![("status", SqlType::Text), ("amount", SqlType::Integer)]
        );
        assert_eq!(p.decoy_rows().len(), 2, "{:?}", p.decoy_rows());
        assert_eq!(total(&p, 4), Some(Decimal::from_int(4)));
        let add = p.batches_to_add(2).unwrap();
        let mut all = p.decoy_rows();
        all.extend(p.batches_for_total(4).unwrap());
        all.extend(add);
        assert_eq!(p.evaluate(&all), Some(Decimal::from_int(6)));
    }

    #[test]
    fn identifiers_fold_like_postgresql_and_quotes_keep_case() {
        let p = SeedPlan::for_query(
            r#"select count(*) from "Sales"."Orders" o where o."Status" = 'x' and O.Region <> 'eu'"#,
            1,
        )
        .unwrap();
        assert_eq!(p.table().schema, "Sales");
        assert_eq!(p.table().name, "Orders");
        let names: Vec<&str> = p.table().columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["Status", "region"]);
        // Quotes inside a quoted name are the name's own.
        let p = SeedPlan::for_query(
            r#"SELECT COUNT(*) FROM "we""ird" WHERE "a""b" = 'it''s'"#,
            2,
        )
        .unwrap();
        assert_eq!(p.table().name, "we\"ird");
        assert_eq!(p.table().columns[0].name, "a\"b");
        assert_eq!(total(&p, 2), Some(Decimal::from_int(2)));
    }

    #[test]
    fn sum_is_rows_of_one_unless_the_where_excludes_one() {
        let p = SeedPlan::for_query("SELECT SUM(qty) FROM t WHERE status = 'open'", 5).unwrap();
        let b = p.batches_for_total(5).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].count, 5);
        assert_eq!(total(&p, 5), Some(Decimal::from_int(5)));
        assert_eq!(total(&p, 0), Some(Decimal::from_int(0)));

        let p = SeedPlan::for_query("SELECT SUM(amount) FROM t WHERE amount > 10", 25).unwrap();
        let b = p.batches_for_total(25).unwrap();
        assert_eq!((b.len(), b[0].count), (1, 1));
        assert_eq!(total(&p, 25), Some(Decimal::from_int(25)));
        let e = SeedPlan::for_query("SELECT SUM(amount) FROM t WHERE amount > 10", 3).unwrap_err();
        assert!(
            matches!(e, SeedPlanError::Unsatisfiable { rows: 3, .. }),
            "{e}"
        );
        // Adding 2 would need a row of amount = 2, which the WHERE refuses: said when planned, not when KEDA polls.
        assert!(p.batches_to_add(2).is_err());
        assert!(p.batches_to_add(11).is_ok());
    }

    #[test]
    fn count_of_a_column_needs_non_null_values_and_is_null_needs_nulls() {
        let p = SeedPlan::for_query("SELECT COUNT(done_at) FROM jobs", 3).unwrap();
        assert_eq!(total(&p, 3), Some(Decimal::from_int(3)));
        // The NULL decoy is there and not counted.
        assert!(p.decoy_rows().iter().any(|r| r.cells[0] == Cell::Null));
        let p = SeedPlan::for_query("SELECT COUNT(*) FROM jobs WHERE done_at IS NULL", 3).unwrap();
        assert_eq!(p.batches_for_total(3).unwrap()[0].cells[0], Cell::Null);
        assert_eq!(total(&p, 3), Some(Decimal::from_int(3)));
        let e = SeedPlan::for_query("SELECT COUNT(done_at) FROM jobs WHERE done_at IS NULL", 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("IS NULL") && e.contains("--seed-sql"), "{e}");
        // ...which is fine for 0.
        SeedPlan::for_query("SELECT COUNT(done_at) FROM jobs WHERE done_at IS NULL", 0).unwrap();
    }

    #[test]
    fn every_supported_comparison_is_satisfied() {
        for q in [
            "SELECT COUNT(*) FROM t WHERE a = 5",
            "SELECT COUNT(*) FROM t WHERE a <> 5 AND a != 1",
            "SELECT COUNT(*) FROM t WHERE a < 5 AND a > 3",
            "SELECT COUNT(*) FROM t WHERE a <= 5 AND a >= 5",
            "SELECT COUNT(*) FROM t WHERE a > 1 AND a < 1.1",
            "SELECT COUNT(*) FROM t WHERE 10 < a",
            "SELECT COUNT(*) FROM t WHERE a IN (7, 8) AND a <> 7",
            "SELECT COUNT(*) FROM t WHERE a NOT IN (1, 2, 0)",
            "SELECT COUNT(*) FROM t WHERE a BETWEEN -3 AND -2",
            "SELECT COUNT(*) FROM t WHERE s > 'a' AND s < 'a0'",
            "SELECT COUNT(*) FROM t WHERE s < 'b' AND s <> ''",
            "SELECT COUNT(*) FROM t WHERE s IN ('x', 'y') AND (b = true) AND n IS NOT NULL",
            "SELECT COUNT(*) FROM t WHERE a > 3000000000",
            "SELECT count(1) AS n FROM t WHERE (a = 1 AND (b = 'x'));",
        ] {
            let p = SeedPlan::for_query(q, 7).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert_eq!(total(&p, 7), Some(Decimal::from_int(7)), "{q}: {p:?}");
        }
        let p = SeedPlan::for_query("SELECT COUNT(*) FROM t WHERE a > 3000000000", 1).unwrap();
        assert_eq!(p.table().columns[0].sql_type, SqlType::BigInt);
        let p = SeedPlan::for_query("SELECT COUNT(*) FROM t WHERE a > 1.5", 1).unwrap();
        assert_eq!(p.table().columns[0].sql_type, SqlType::Numeric);
    }

    fn unsupported(q: &str) -> String {
        let e = SeedPlan::for_query(q, 3).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("--seed-sql FILE") && text.contains("data.seed_sql"),
            "{q}: {text}"
        );
        text
    }

    #[test]
    fn unsupported_shapes_name_what_and_offer_seed_sql() {
        for (q, what) in [
            ("SELECT COUNT(*) FROM a JOIN b ON a.id = b.id", "JOIN"),
            ("SELECT COUNT(*) FROM a, b", "several tables"),
            ("SELECT COUNT(*) FROM (SELECT 1) s", "subquery"),
            (
                "SELECT COUNT(*) FROM t WHERE id IN (SELECT id FROM u)",
                "subquery",
            ),
            ("SELECT COUNT(*) FROM t GROUP BY x", "GROUP BY"),
            ("SELECT MAX(x) FROM t", "MAX"),
            ("SELECT COALESCE(SUM(x), 0) FROM t", "COALESCE"),
            ("SELECT COUNT(*) FROM t WHERE a = 1 OR a = 2", "OR"),
            ("SELECT COUNT(*) FROM t WHERE name LIKE 'a%'", "LIKE"),
            ("SELECT COUNT(*) FROM t WHERE a = b", "two columns"),
            ("SELECT COUNT(*) FROM t WHERE a = now()", "not a literal"),
            ("SELECT COUNT(DISTINCT a) FROM t", "DISTINCT"),
            ("SELECT COUNT(*), SUM(a) FROM t", "2 columns"),
            (
                "SELECT COUNT(*) FROM t WHERE a = 1 AND a = 'x'",
                "a number and as a string",
            ),
            ("SELECT COUNT(*) FROM db.s.t", "3 parts"),
            ("SELECT COUNT(*) FROM t x WHERE t.a = 1", "known as `x`"),
            ("SELECT COUNT(*) FROM t LIMIT 1", "LIMIT"),
            ("SELECT 1", "no FROM"),
            ("SELECT 1 FROM t", "not COUNT"),
            ("WITH x AS (SELECT 1) SELECT COUNT(*) FROM x", "WITH"),
            ("SELECT COUNT(*) FROM t WHERE NOT a = 1", "NOT"),
        ] {
            let text = unsupported(q);
            assert!(text.contains(what), "{q}: wanted `{what}` in: {text}");
            assert!(
                text.contains(&format!("{q:?}")),
                "the query is quoted: {text}"
            );
        }
    }

    #[test]
    fn several_statements_and_non_selects_are_refused() {
        let t = unsupported("SELECT 1; DROP TABLE x");
        assert!(t.contains("2 statements"), "{t}");
        let t = unsupported("SELECT COUNT(*) FROM t; DELETE FROM t");
        assert!(t.contains("2 statements"), "{t}");
        for (q, verb) in [
            ("DROP TABLE x", "DROP"),
            ("DELETE FROM t", "DELETE"),
            ("INSERT INTO t VALUES (1)", "INSERT"),
            ("UPDATE t SET a = 1", "UPDATE"),
        ] {
            let t = unsupported(q);
            assert!(t.contains(&format!("`{verb}` statement")), "{t}");
        }
        let t = unsupported("SELECT COUNT(*) INTO x FROM t");
        assert!(t.contains("SELECT INTO"), "{t}");
        assert!(matches!(
            SeedPlan::for_query("", 1),
            Err(SeedPlanError::Parse { .. })
        ));
        assert!(matches!(
            SeedPlan::for_query("SELEC COUNT(*) FROM t", 1),
            Err(SeedPlanError::Parse { .. })
        ));
    }

    #[test]
    fn hostile_input_gets_an_error_not_a_panic() {
        // Huge: refused by size, the message quotes only the start.
        let huge = format!("SELECT COUNT(*) FROM t WHERE a = '{}'", "x".repeat(100_000));
        let e = SeedPlan::for_query(&huge, 1).unwrap_err().to_string();
        assert!(e.contains("bytes") && e.len() < 2000, "{}", &e[..200]);
        // Deep parentheses: the parser's recursion limit, not a stack overflow.
        let deep = format!(
            "SELECT COUNT(*) FROM t WHERE {}a = 1{}",
            "(".repeat(5000),
            ")".repeat(5000)
        );
        assert!(SeedPlan::for_query(&deep, 1).is_err());
        // A long AND chain just under the size cap plans (iteratively).
        let mut long = String::from("SELECT COUNT(*) FROM t WHERE a = 1");
        while long.len() < MAX_QUERY_BYTES - 20 {
            long.push_str(" AND a <> 2");
        }
        let p = SeedPlan::for_query(&long, 2).unwrap();
        assert_eq!(total(&p, 2), Some(Decimal::from_int(2)));
        // NUL, empty quoted identifiers, odd literals.
        assert!(SeedPlan::for_query("SELECT COUNT(*) FROM t\0", 1).is_err());
        assert!(SeedPlan::for_query(r#"SELECT COUNT(*) FROM """#, 1).is_err());
        assert!(SeedPlan::for_query("SELECT COUNT(*) FROM t WHERE a = E'\\x'", 1).is_err());
        assert!(SeedPlan::for_query("SELECT COUNT(*) FROM t WHERE a = 1e999", 1).is_err());
        // `= NULL` is never true: nothing matches, said clearly.
        let e = SeedPlan::for_query("SELECT COUNT(*) FROM t WHERE a = NULL", 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("NULL"), "{e}");
    }

    #[test]
    fn long_identifiers_are_cut_as_postgresql_cuts_them() {
        let long = "é".repeat(40); // 80 bytes
        let p = SeedPlan::for_query(&format!("SELECT COUNT(*) FROM {long}"), 1).unwrap();
        assert_eq!(
            p.table().name.len(),
            62,
            "cut at a character boundary at or below 63 bytes"
        );
        assert_eq!(p.table().name, "é".repeat(31));
    }

    #[test]
    fn the_row_number_column_never_collides_with_the_query_s() {
        let p = SeedPlan::for_query("SELECT COUNT(*) FROM t WHERE seed_row > 3", 2).unwrap();
        assert_eq!(p.table().row_number_column, "seed_row_");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

            #[test]
            fn any_text_is_planned_or_refused_without_panicking(q in "\\PC{0,300}") {
                let _ = SeedPlan::for_query(&q, 3);
            }

            #[test]
            fn query_like_text_is_planned_or_refused_without_panicking(
                parts in proptest::collection::vec(prop_oneof![
                    Just("SELECT"), Just("COUNT(*)"), Just("SUM(a)"), Just("FROM"), Just("t"), Just("WHERE"),
                    Just("a"), Just("="), Just("<>"), Just("'x'"), Just("1"), Just("AND"), Just("IN"), Just("("),
                    Just(")"), Just(","), Just("IS"), Just("NOT"), Just("NULL"), Just(";"), Just("\"Q\"\"t\""),
                ], 0..30)
            ) {
                let _ = SeedPlan::for_query(&parts.join(" "), 3);
            }

            /// Conjunctions of random supported conditions: whenever a plan is made, its own reading of the
            /// rows gives exactly N (the integration test checks the same against PostgreSQL).
            #[test]
            fn planned_rows_give_exactly_n(
                conds in proptest::collection::vec((0usize..3, 0usize..8, -3i64..4), 0..5),
                n in 0u64..50,
                k in 0u64..5,
            ) {
                let ops = ["=", "<>", "<", ">", "<=", ">="];
                let mut q = String::from("SELECT COUNT(*) FROM s.t");
                for (i, (col, op, v)) in conds.iter().enumerate() {
                    q.push_str(if i == 0 { " WHERE " } else { " AND " });
                    match op {
                        6 => q.push_str(&format!("c{col} IS NOT NULL")),
                        7 => q.push_str(&format!("c{col} IN ({v}, {})", v + 2)),
                        _ => q.push_str(&format!("c{col} {} {v}", ops[*op])),
                    }
                }
                if let Ok(p) = SeedPlan::for_query(&q, n) {
                    let mut rows = p.decoy_rows();
                    rows.extend(p.batches_for_total(n).unwrap());
                    prop_assert_eq!(p.evaluate(&rows), Some(Decimal::from_int(n.into())));
                    if let Ok(more) = p.batches_to_add(k) {
                        rows.extend(more);
                        prop_assert_eq!(p.evaluate(&rows), Some(Decimal::from_int((n + k).into())));
                    }
                }
            }
        }
    }
}
