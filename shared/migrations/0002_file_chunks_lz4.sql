-- Stored file chunks are written once and read once or twice (an upload imported, an export downloaded)
-- and live hours to days: lz4 compresses CSV several times over at a fraction of pglz's CPU cost, which
-- halves the time an export spends storing its output. A server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE stored_file_chunks ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no lz4: stored_file_chunks stays compressed with pglz';
END
$$;
