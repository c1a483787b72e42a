"""The operations-centre board (CONTRACT section 6): a live web page over PostgreSQL.

Modules, one concern each:

* `auth.py`: who is asking and which regions they may see (oauth2-proxy headers);
* `live.py`: live state *now* of stored clocks, through the engine's own thresholds (pure);
* `query.py`: the SQL, every query filtered by the viewer's regions;
* `database.py`: a small pool of async psycopg connections; a lost server is "unavailable";
* `feed.py`: the change feed (PostgreSQL LISTEN/NOTIFY on the worker's commits plus a tick,
  so time-driven changes show with no event arriving) fanned out to Server-Sent Events;
* `view.py`: the page and its live fragments (Jinja2 templates);
* `app.py`: the aiohttp application (routes, errors); `command.py`: `crisiswatch board`.

State on the board is computed at the wall-clock instant of each answer, not read from the
`state` column the worker last wrote: a clock that crossed 90 minutes a second ago is at risk.
"""
