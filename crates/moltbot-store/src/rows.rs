//! Reading a result row the same way on both backends.
//!
//! Every `SELECT` lists its columns from one shared constant (`JOB_COLUMNS`…), so a row
//! is decoded by position; [`Cols`] hides how each driver gets a typed value out of a
//! column, and the `row_to_*` functions beside each row type are written once.

pub(crate) trait Cols {
    type Error;
    fn text(&self, i: usize) -> Result<String, Self::Error>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    fn int(&self, i: usize) -> Result<i64, Self::Error>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    /// A boolean: INTEGER 0/1 in SQLite, BOOLEAN in PostgreSQL.
    fn flag(&self, i: usize) -> Result<bool, Self::Error>;
    /// A column whose value makes no sense (only a hand-edited row gets there).
    fn bad(i: usize, what: String) -> Self::Error;

    /// A token count: stored as an integer, read back as `u32` (out-of-range → `None`).
    fn opt_count(&self, i: usize) -> Result<Option<u32>, Self::Error> {
        Ok(self.opt_int(i)?.and_then(|v| u32::try_from(v).ok()))
    }
}

impl Cols for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn text(&self, i: usize) -> rusqlite::Result<String> {
        self.get(i)
    }
    fn opt_text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
    fn int(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }
    fn opt_int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }
    fn flag(&self, i: usize) -> rusqlite::Result<bool> {
        self.get(i)
    }
    fn bad(i: usize, what: String) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    }
}

impl Cols for sqlx::postgres::PgRow {
    type Error = sqlx::Error;
    fn text(&self, i: usize) -> sqlx::Result<String> {
        sqlx::Row::try_get(self, i)
    }
    fn opt_text(&self, i: usize) -> sqlx::Result<Option<String>> {
        sqlx::Row::try_get(self, i)
    }
    fn int(&self, i: usize) -> sqlx::Result<i64> {
        sqlx::Row::try_get(self, i)
    }
    fn opt_int(&self, i: usize) -> sqlx::Result<Option<i64>> {
        sqlx::Row::try_get(self, i)
    }
    fn flag(&self, i: usize) -> sqlx::Result<bool> {
        sqlx::Row::try_get(self, i)
    }
    fn bad(i: usize, what: String) -> sqlx::Error {
        sqlx::Error::ColumnDecode {
            index: i.to_string(),
            source: what.into(),
        }
    }
}
