-- A gateway database written by the release at commit 40ae1f1 (PRAGMA user_version 1), dumped with
-- Python's sqlite3 iterdump: only the tables of its Store (readings, alerts, transitions, sessions),
-- as that release left a file the other modules never opened; the Store rows of
-- gateway_40ae1f1_full.sql. tests/gateway/test_gateway_schema.py migrates it with today's code and
-- reads it back.
PRAGMA user_version=1;
BEGIN TRANSACTION;
CREATE TABLE alert_transitions (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,  -- append-only audit order
    alert_id TEXT    NOT NULL,
    change   TEXT    NOT NULL,  -- raised | updated | resolved | acknowledged
    ts       INTEGER NOT NULL,
    body     TEXT    NOT NULL   -- the alert after the change
);
INSERT INTO "alert_transitions" VALUES(1,'prone-x','raised',1767239221234,'{"id":"prone-x","rule":"prone","severity":"critical","state":"active","acknowledged":false,"acknowledged_by":null,"acknowledged_ts":null,"escalated":false,"device":null,"room":"hiyoko","child":"c01","started_ts":1767239221234,"updated_ts":1767239221234,"resolved_ts":null,"value":null,"message":"m","message_en":"m","notify_count":0,"notified_ts":null,"escalated_ts":null}');
INSERT INTO "alert_transitions" VALUES(2,'prone-x','resolved',1767239281234,'{"id":"prone-x","rule":"prone","severity":"critical","state":"resolved","acknowledged":false,"acknowledged_by":null,"acknowledged_ts":null,"escalated":false,"device":null,"room":"hiyoko","child":"c01","started_ts":1767239221234,"updated_ts":1767239281234,"resolved_ts":1767239281234,"value":null,"message":"m","message_en":"m","notify_count":0,"notified_ts":null,"escalated_ts":null}');
CREATE TABLE alerts (
    id           TEXT    PRIMARY KEY,
    rule         TEXT    NOT NULL,
    severity     TEXT    NOT NULL,
    state        TEXT    NOT NULL,  -- active | resolved
    acknowledged INTEGER NOT NULL,  -- 0 | 1
    device       TEXT,
    room         TEXT,
    child        TEXT,
    started_ts   INTEGER NOT NULL,
    updated_ts   INTEGER NOT NULL,
    resolved_ts  INTEGER,
    body         TEXT    NOT NULL   -- the whole contract Alert as JSON
);
INSERT INTO "alerts" VALUES('prone-x','prone','critical','resolved',0,NULL,'hiyoko','c01',1767239221234,1767239281234,1767239281234,'{"id":"prone-x","rule":"prone","severity":"critical","state":"resolved","acknowledged":false,"acknowledged_by":null,"acknowledged_ts":null,"escalated":false,"device":null,"room":"hiyoko","child":"c01","started_ts":1767239221234,"updated_ts":1767239281234,"resolved_ts":1767239281234,"value":null,"message":"m","message_en":"m","notify_count":0,"notified_ts":null,"escalated_ts":null}');
CREATE TABLE readings (
    id          INTEGER PRIMARY KEY,
    device      TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    ts          INTEGER NOT NULL,   -- message time, unix ms
    seq         INTEGER NOT NULL,
    payload     TEXT    NOT NULL,   -- the validated reading as JSON
    received_ts INTEGER NOT NULL,   -- gateway clock, unix ms
    UNIQUE (device, stream, seq, ts)
);
INSERT INTO "readings" VALUES(1,'nap_-c01','breathing',1767238921234,0,'{"ts":1767238921234,"seq":0,"rate_bpm":20.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767238921274);
INSERT INTO "readings" VALUES(2,'post-c01','posture',1767238921234,0,'{"ts":1767238921234,"seq":0,"position":"supine","accel_mg":null}',1767238921274);
INSERT INTO "readings" VALUES(3,'air-hiyoko','air',1767238921234,0,'{"ts":1767238921234,"seq":0,"co2_ppm":600.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767238921274);
INSERT INTO "readings" VALUES(4,'nap_-c01','breathing',1767238981234,1,'{"ts":1767238981234,"seq":1,"rate_bpm":21.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767238981274);
INSERT INTO "readings" VALUES(5,'post-c01','posture',1767238981234,1,'{"ts":1767238981234,"seq":1,"position":"supine","accel_mg":null}',1767238981274);
INSERT INTO "readings" VALUES(6,'air-hiyoko','air',1767238981234,1,'{"ts":1767238981234,"seq":1,"co2_ppm":601.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767238981274);
INSERT INTO "readings" VALUES(7,'nap_-c01','breathing',1767239041234,2,'{"ts":1767239041234,"seq":2,"rate_bpm":22.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239041274);
INSERT INTO "readings" VALUES(8,'post-c01','posture',1767239041234,2,'{"ts":1767239041234,"seq":2,"position":"supine","accel_mg":null}',1767239041274);
INSERT INTO "readings" VALUES(9,'air-hiyoko','air',1767239041234,2,'{"ts":1767239041234,"seq":2,"co2_ppm":602.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239041274);
INSERT INTO "readings" VALUES(10,'nap_-c01','breathing',1767239101234,3,'{"ts":1767239101234,"seq":3,"rate_bpm":23.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239101274);
INSERT INTO "readings" VALUES(11,'post-c01','posture',1767239101234,3,'{"ts":1767239101234,"seq":3,"position":"supine","accel_mg":null}',1767239101274);
INSERT INTO "readings" VALUES(12,'air-hiyoko','air',1767239101234,3,'{"ts":1767239101234,"seq":3,"co2_ppm":603.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239101274);
INSERT INTO "readings" VALUES(13,'nap_-c01','breathing',1767239161234,4,'{"ts":1767239161234,"seq":4,"rate_bpm":24.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239161274);
INSERT INTO "readings" VALUES(14,'post-c01','posture',1767239161234,4,'{"ts":1767239161234,"seq":4,"position":"supine","accel_mg":null}',1767239161274);
INSERT INTO "readings" VALUES(15,'air-hiyoko','air',1767239161234,4,'{"ts":1767239161234,"seq":4,"co2_ppm":604.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239161274);
INSERT INTO "readings" VALUES(16,'nap_-c01','breathing',1767239221234,5,'{"ts":1767239221234,"seq":5,"rate_bpm":20.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239221274);
INSERT INTO "readings" VALUES(17,'post-c01','posture',1767239221234,5,'{"ts":1767239221234,"seq":5,"position":"supine","accel_mg":null}',1767239221274);
INSERT INTO "readings" VALUES(18,'air-hiyoko','air',1767239221234,5,'{"ts":1767239221234,"seq":5,"co2_ppm":605.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239221274);
INSERT INTO "readings" VALUES(19,'nap_-c01','breathing',1767239281234,6,'{"ts":1767239281234,"seq":6,"rate_bpm":21.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239281274);
INSERT INTO "readings" VALUES(20,'post-c01','posture',1767239281234,6,'{"ts":1767239281234,"seq":6,"position":"supine","accel_mg":null}',1767239281274);
INSERT INTO "readings" VALUES(21,'air-hiyoko','air',1767239281234,6,'{"ts":1767239281234,"seq":6,"co2_ppm":606.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239281274);
INSERT INTO "readings" VALUES(22,'nap_-c01','breathing',1767239341234,7,'{"ts":1767239341234,"seq":7,"rate_bpm":22.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239341274);
INSERT INTO "readings" VALUES(23,'post-c01','posture',1767239341234,7,'{"ts":1767239341234,"seq":7,"position":"supine","accel_mg":null}',1767239341274);
INSERT INTO "readings" VALUES(24,'air-hiyoko','air',1767239341234,7,'{"ts":1767239341234,"seq":7,"co2_ppm":607.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239341274);
INSERT INTO "readings" VALUES(25,'nap_-c01','breathing',1767239401234,8,'{"ts":1767239401234,"seq":8,"rate_bpm":23.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239401274);
INSERT INTO "readings" VALUES(26,'post-c01','posture',1767239401234,8,'{"ts":1767239401234,"seq":8,"position":"supine","accel_mg":null}',1767239401274);
INSERT INTO "readings" VALUES(27,'air-hiyoko','air',1767239401234,8,'{"ts":1767239401234,"seq":8,"co2_ppm":608.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239401274);
INSERT INTO "readings" VALUES(28,'nap_-c01','breathing',1767239461234,9,'{"ts":1767239461234,"seq":9,"rate_bpm":24.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239461274);
INSERT INTO "readings" VALUES(29,'post-c01','posture',1767239461234,9,'{"ts":1767239461234,"seq":9,"position":"supine","accel_mg":null}',1767239461274);
INSERT INTO "readings" VALUES(30,'air-hiyoko','air',1767239461234,9,'{"ts":1767239461234,"seq":9,"co2_ppm":609.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239461274);
INSERT INTO "readings" VALUES(31,'nap_-c01','breathing',1767239521234,10,'{"ts":1767239521234,"seq":10,"rate_bpm":20.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239521274);
INSERT INTO "readings" VALUES(32,'post-c01','posture',1767239521234,10,'{"ts":1767239521234,"seq":10,"position":"supine","accel_mg":null}',1767239521274);
INSERT INTO "readings" VALUES(33,'air-hiyoko','air',1767239521234,10,'{"ts":1767239521234,"seq":10,"co2_ppm":610.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239521274);
INSERT INTO "readings" VALUES(34,'nap_-c01','breathing',1767239581234,11,'{"ts":1767239581234,"seq":11,"rate_bpm":21.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239581274);
INSERT INTO "readings" VALUES(35,'post-c01','posture',1767239581234,11,'{"ts":1767239581234,"seq":11,"position":"supine","accel_mg":null}',1767239581274);
INSERT INTO "readings" VALUES(36,'air-hiyoko','air',1767239581234,11,'{"ts":1767239581234,"seq":11,"co2_ppm":611.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239581274);
INSERT INTO "readings" VALUES(37,'nap_-c01','breathing',1767239641234,12,'{"ts":1767239641234,"seq":12,"rate_bpm":22.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239641274);
INSERT INTO "readings" VALUES(38,'post-c01','posture',1767239641234,12,'{"ts":1767239641234,"seq":12,"position":"supine","accel_mg":null}',1767239641274);
INSERT INTO "readings" VALUES(39,'air-hiyoko','air',1767239641234,12,'{"ts":1767239641234,"seq":12,"co2_ppm":612.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239641274);
INSERT INTO "readings" VALUES(40,'nap_-c01','breathing',1767239701234,13,'{"ts":1767239701234,"seq":13,"rate_bpm":23.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239701274);
INSERT INTO "readings" VALUES(41,'post-c01','posture',1767239701234,13,'{"ts":1767239701234,"seq":13,"position":"supine","accel_mg":null}',1767239701274);
INSERT INTO "readings" VALUES(42,'air-hiyoko','air',1767239701234,13,'{"ts":1767239701234,"seq":13,"co2_ppm":613.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239701274);
INSERT INTO "readings" VALUES(43,'nap_-c01','breathing',1767239761234,14,'{"ts":1767239761234,"seq":14,"rate_bpm":24.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239761274);
INSERT INTO "readings" VALUES(44,'post-c01','posture',1767239761234,14,'{"ts":1767239761234,"seq":14,"position":"supine","accel_mg":null}',1767239761274);
INSERT INTO "readings" VALUES(45,'air-hiyoko','air',1767239761234,14,'{"ts":1767239761234,"seq":14,"co2_ppm":614.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239761274);
INSERT INTO "readings" VALUES(46,'nap_-c01','breathing',1767239821234,15,'{"ts":1767239821234,"seq":15,"rate_bpm":20.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239821274);
INSERT INTO "readings" VALUES(47,'post-c01','posture',1767239821234,15,'{"ts":1767239821234,"seq":15,"position":"supine","accel_mg":null}',1767239821274);
INSERT INTO "readings" VALUES(48,'air-hiyoko','air',1767239821234,15,'{"ts":1767239821234,"seq":15,"co2_ppm":615.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239821274);
INSERT INTO "readings" VALUES(49,'nap_-c01','breathing',1767239881234,16,'{"ts":1767239881234,"seq":16,"rate_bpm":21.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239881274);
INSERT INTO "readings" VALUES(50,'post-c01','posture',1767239881234,16,'{"ts":1767239881234,"seq":16,"position":"supine","accel_mg":null}',1767239881274);
INSERT INTO "readings" VALUES(51,'air-hiyoko','air',1767239881234,16,'{"ts":1767239881234,"seq":16,"co2_ppm":616.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239881274);
INSERT INTO "readings" VALUES(52,'nap_-c01','breathing',1767239941234,17,'{"ts":1767239941234,"seq":17,"rate_bpm":22.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239941274);
INSERT INTO "readings" VALUES(53,'post-c01','posture',1767239941234,17,'{"ts":1767239941234,"seq":17,"position":"supine","accel_mg":null}',1767239941274);
INSERT INTO "readings" VALUES(54,'air-hiyoko','air',1767239941234,17,'{"ts":1767239941234,"seq":17,"co2_ppm":617.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239941274);
INSERT INTO "readings" VALUES(55,'nap_-c01','breathing',1767240001234,18,'{"ts":1767240001234,"seq":18,"rate_bpm":23.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767240001274);
INSERT INTO "readings" VALUES(56,'post-c01','posture',1767240001234,18,'{"ts":1767240001234,"seq":18,"position":"supine","accel_mg":null}',1767240001274);
INSERT INTO "readings" VALUES(57,'air-hiyoko','air',1767240001234,18,'{"ts":1767240001234,"seq":18,"co2_ppm":618.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767240001274);
INSERT INTO "readings" VALUES(58,'nap_-c01','breathing',1767240061234,19,'{"ts":1767240061234,"seq":19,"rate_bpm":24.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767240061274);
INSERT INTO "readings" VALUES(59,'post-c01','posture',1767240061234,19,'{"ts":1767240061234,"seq":19,"position":"supine","accel_mg":null}',1767240061274);
INSERT INTO "readings" VALUES(60,'air-hiyoko','air',1767240061234,19,'{"ts":1767240061234,"seq":19,"co2_ppm":619.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767240061274);
CREATE TABLE session_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- append-only
    room       TEXT    NOT NULL,
    change     TEXT    NOT NULL,  -- started | stopped
    ts         INTEGER NOT NULL,  -- gateway clock, unix ms
    session_id TEXT    NOT NULL,
    body       TEXT    NOT NULL   -- the SessionState after the change
);
INSERT INTO "session_log" VALUES(1,'hiyoko','started',1767238921234,'s-1','{"room":"hiyoko","active":true,"session_id":"s-1","source":null,"started_ts":1767238921234,"started_by":"staff","scheduled_end_ts":null,"stopped_ts":null,"stopped_by":null,"updated_ts":1767238921234}');
INSERT INTO "session_log" VALUES(2,'hiyoko','stopped',1767240721234,'s-1','{"room":"hiyoko","active":false,"session_id":"s-1","source":null,"started_ts":1767238921234,"started_by":"staff","scheduled_end_ts":null,"stopped_ts":1767240721234,"stopped_by":"staff","updated_ts":1767240721234}');
CREATE TABLE sessions (
    room            TEXT PRIMARY KEY,
    body            TEXT,           -- the room's latest SessionState as JSON (NULL: never had one)
    schedule_window TEXT            -- the nap_schedule window the gateway last acted on
);
INSERT INTO "sessions" VALUES('hiyoko','{"room":"hiyoko","active":false,"session_id":"s-1","source":null,"started_ts":1767238921234,"started_by":"staff","scheduled_end_ts":null,"stopped_ts":1767240721234,"stopped_by":"staff","updated_ts":1767240721234}','2026-01-01T12:30');
CREATE INDEX readings_by_stream ON readings (stream, device, ts);
CREATE INDEX alerts_open ON alerts (state, acknowledged);
CREATE INDEX alerts_by_start ON alerts (started_ts);
CREATE INDEX alert_transitions_by_alert ON alert_transitions (alert_id, seq);
CREATE INDEX session_log_by_room ON session_log (room, ts);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('alert_transitions',2);
INSERT INTO "sqlite_sequence" VALUES('session_log',2);
COMMIT;
