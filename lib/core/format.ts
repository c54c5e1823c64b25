// How durations and sizes read to a person, in emails and in error messages alike.

/** "2.5 s", "45 s", "2 min 5 s", "1 h 3 min". */
export function formatDuration(seconds: number): string {
  if (seconds < 59.5) return `${Number(seconds.toFixed(seconds < 10 ? 1 : 0))} s`;
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (h > 0) return m > 0 ? `${h} h ${m} min` : `${h} h`;
  return rest > 0 ? `${m} min ${rest} s` : `${m} min`;
}

/** "512 B", "4 kB", "3.2 MB", "8.6 GB": decimal units, as file managers show them. */
export function formatSize(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  const shown = unit === 0 || value >= 10 ? Math.round(value).toString() : String(Number(value.toFixed(1)));
  return `${shown} ${units[unit]}`;
}
