-- lookup_order: the status of an order, from orders.json in the job's folder.
-- Loaded once per worker; `orders` is shared by every call.
local orders = eddy.json.decode(assert(eddy.file.read("orders.json")))

return eddy.tool {
  name = "lookup_order",
  description = "Look up the status, carrier and expected delivery date of an order",
  params = {
    order_id = { type = "string", required = true, description = "Order number such as A1042" },
  },
  run = function(args, ctx)
    local id = string.upper(args.order_id)
    local o = orders[id]
    if not o then
      error("no order " .. id)
    end
    -- remembered per customer across runs (durable memory)
    ctx.memory.last_order = id
    ctx.memory.lookups = (ctx.memory.lookups or 0) + 1
    return { order_id = id, status = o.status, carrier = o.carrier, eta = o.eta }
  end,
}
