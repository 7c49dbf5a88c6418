#!lua name=cart
-- cart: a shopping cart (hash product_id -> quantity) checked against an inventory (hash product_id -> stock) and
-- priced from a price list (hash product_id -> '9.99'). Money is computed in integer cents and shown with two
-- decimals. Keys, arguments, replies and errors: lua/README.md.
-- Only local helpers and redis.register_function run at load time.

local MAX_EXACT = 2 ^ 53 -- cents and quantities above this would no longer be exact in a Lua number

local function fail(code, details)
  return redis.error_reply(code .. ' ' .. details)
end

-- A caller's value echoed in an error: short, on one line.
local function show(value)
  value = tostring(value)
  if #value > 64 then
    value = value:sub(1, 61) .. '...'
  end
  return "'" .. value:gsub('%c', '?') .. "'"
end

-- A non-negative integer in plain decimal digits below 10^15 (exact in a Lua number), or nil.
local function count(value)
  if type(value) ~= 'string' or not value:match('^%d+$') then
    return nil
  end
  local number = tonumber(value)
  if number >= 1e15 then
    return nil
  end
  return number
end

local function parse_quantity(value)
  local quantity = count(value)
  if not quantity or quantity < 1 then
    return nil, fail('INVALID_AMOUNT', 'quantity must be a positive integer below 10^15, got ' .. show(value))
  end
  return quantity
end

-- A hash field holding a count, through pcall: the number, false when the field is missing, or nil and an error.
local function stored_count(key, field, what)
  local value = redis.pcall('HGET', key, field)
  if type(value) == 'table' then
    return nil, fail('WRONGTYPE_VALUE', what .. ' key does not hold a hash')
  end
  if value == false then
    return false
  end
  local number = count(value)
  if not number then
    return nil, fail('WRONGTYPE_VALUE', what .. ' of product_id=' .. show(field) ..
      ' is not a non-negative integer: ' .. show(value))
  end
  return number
end

-- '9.99', '10', '10.5' -> 999, 1000, 1050 cents; nil for anything else (negative, 3 decimals, exponent, ...).
local function cents(price)
  local whole, fraction = price:match('^(%d+)%.(%d%d?)$')
  if not whole then
    whole, fraction = price:match('^(%d+)$'), '0'
  end
  if not whole or #whole > 13 then
    return nil
  end
  if #fraction == 1 then
    fraction = fraction .. '0'
  end
  return tonumber(whole) * 100 + tonumber(fraction)
end

local function money(amount_in_cents)
  return string.format('%d.%02d', math.floor(amount_in_cents / 100), amount_in_cents % 100)
end

local function cart_add(keys, args)
  if #keys ~= 2 or #args ~= 2 then
    return fail('INVALID_ARGS', 'usage: FCALL cart_add 2 <cart> <inventory> <product_id> <quantity>')
  end
  local product_id = args[1]
  if product_id == '' then
    return fail('INVALID_ARGS', 'product_id must not be empty')
  end
  local quantity, err = parse_quantity(args[2])
  if err then
    return err
  end
  local stock
  stock, err = stored_count(keys[2], product_id, 'stock')
  if err then
    return err
  end
  if stock == false then
    return fail('UNKNOWN_PRODUCT', 'product_id=' .. show(product_id) .. ' is not in the inventory')
  end
  local in_cart
  in_cart, err = stored_count(keys[1], product_id, 'cart quantity')
  if err then
    return err
  end
  in_cart = in_cart or 0
  if in_cart + quantity > stock then
    return fail('INSUFFICIENT_STOCK',
      string.format('available=%d in_cart=%d requested=%d', stock, in_cart, quantity))
  end
  return redis.call('HINCRBY', keys[1], product_id, string.format('%d', quantity))
end

local function cart_remove(keys, args)
  if #keys ~= 1 or #args < 1 or #args > 2 then
    return fail('INVALID_ARGS', 'usage: FCALL cart_remove 1 <cart> <product_id> [quantity]')
  end
  local product_id = args[1]
  if product_id == '' then
    return fail('INVALID_ARGS', 'product_id must not be empty')
  end
  local quantity
  if args[2] ~= nil then
    local err
    quantity, err = parse_quantity(args[2])
    if err then
      return err
    end
  end
  local in_cart, err = stored_count(keys[1], product_id, 'cart quantity')
  if err then
    return err
  end
  if in_cart == false then
    return 0
  end
  if quantity == nil or quantity >= in_cart then
    redis.call('HDEL', keys[1], product_id)
    return 0
  end
  return redis.call('HINCRBY', keys[1], product_id, string.format('%d', -quantity))
end

local function cart_get(keys, args)
  if #keys ~= 2 or #args ~= 0 then
    return fail('INVALID_ARGS', 'usage: FCALL_RO cart_get 2 <cart> <prices>')
  end
  local flat = redis.pcall('HGETALL', keys[1])
  if flat.err then
    return fail('WRONGTYPE_VALUE', 'cart key does not hold a hash')
  end
  local quantities, product_ids = {}, {}
  for i = 1, #flat, 2 do
    product_ids[#product_ids + 1] = flat[i]
    quantities[flat[i]] = flat[i + 1]
  end
  table.sort(product_ids) -- HGETALL order is arbitrary; replies are sorted by product_id

  local items, total = {}, 0
  for _, product_id in ipairs(product_ids) do
    local quantity = count(quantities[product_id])
    if not quantity then
      return fail('WRONGTYPE_VALUE', 'cart quantity of product_id=' .. show(product_id) ..
        ' is not a non-negative integer: ' .. show(quantities[product_id]))
    end
    local price = redis.pcall('HGET', keys[2], product_id)
    if type(price) == 'table' then
      return fail('WRONGTYPE_VALUE', 'prices key does not hold a hash')
    end
    if price == false then
      return fail('MISSING_PRICE', 'product_id=' .. show(product_id) .. ' has no price')
    end
    local unit = cents(price)
    if not unit then
      return fail('WRONGTYPE_VALUE', 'price of product_id=' .. show(product_id) ..
        ' is not a non-negative amount with at most 2 decimals: ' .. show(price))
    end
    local subtotal = unit * quantity
    total = total + subtotal
    if subtotal > MAX_EXACT or total > MAX_EXACT then
      return fail('OVERFLOW', 'cart total is too large to compute exactly')
    end
    items[#items + 1] = {
      map = { product_id = product_id, quantity = quantity, price = money(unit), subtotal = money(subtotal) },
    }
  end
  return { map = { items = items, total = money(total) } }
end

local function cart_clear(keys, args)
  if #keys ~= 1 or #args ~= 0 then
    return fail('INVALID_ARGS', 'usage: FCALL cart_clear 1 <cart>')
  end
  return redis.call('DEL', keys[1])
end

redis.register_function{
  function_name = 'cart_add',
  callback = cart_add,
  description = 'Add a quantity of a product to a cart if the inventory allows; returns the new quantity',
}
redis.register_function{
  function_name = 'cart_remove',
  callback = cart_remove,
  description = 'Remove a quantity (default: all) of a product from a cart; returns the remaining quantity',
}
redis.register_function{
  function_name = 'cart_get',
  callback = cart_get,
  flags = { 'no-writes' },
  description = 'A cart with prices: map items (product_id, quantity, price, subtotal) and total',
}
redis.register_function{
  function_name = 'cart_clear',
  callback = cart_clear,
  description = 'Delete a cart; returns 1 if there was one',
}
