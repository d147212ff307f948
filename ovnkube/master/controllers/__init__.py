"""The master's controllers: events, work queues, allocations, annotations and
Events, each handing its rows (from `ovnkube/master/translate/`) to
northd_sync. Each gets what it uses from `Master`; none imports another's
module but the node tracker's."""
